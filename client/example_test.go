package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/go-kvdb/go-kvdb/backup"
	"github.com/go-kvdb/go-kvdb/client"
)

func Example() {
	ctx := context.Background()
	c, err := client.New(kvdbURL, client.WithAPIKey("")) // WithAPIKey(os.Getenv("KVDB_API_KEY"))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := c.CreateTopic(ctx, client.Topic{Name: "support", Description: "support chats"}); err != nil {
		log.Fatal(err)
	}
	doc, err := c.PutContext(ctx, "support", "ticket-1", client.Document{
		Metadata: client.Metadata{Model: "llama3", Tags: []string{"billing"}},
		Content:  client.Content{Text: "The customer was charged twice."},
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("created:", doc.Created)

	got, err := c.GetContext(ctx, "support", "ticket-1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(got.Metadata.ID, got.Metadata.Tags, got.Content.Text)
	fmt.Println("same version:", got.ETag == doc.ETag)
	// Output:
	// created: true
	// ticket-1 [billing] The customer was charged twice.
	// same version: true
}

func ExampleClient_GetContext_notFound() {
	ctx := context.Background()
	c, _ := client.New(kvdbURL)
	_, err := c.GetContext(ctx, "support", "no-such-ticket")
	if errors.Is(err, client.ErrNotFound) {
		fmt.Println("not found")
	}
	var apiErr *client.Error
	if errors.As(err, &apiErr) {
		fmt.Println(apiErr.StatusCode, apiErr.Code)
	}
	// Output:
	// not found
	// 404 not_found
}

func ExampleClient_PutContext_ifMatch() {
	ctx := context.Background()
	c, _ := client.New(kvdbURL)
	c.CreateTopic(ctx, client.Topic{Name: "drafts"})
	v1, _ := c.PutContext(ctx, "drafts", "d", client.Document{Content: client.Content{Text: "first"}}, nil)
	c.PutContext(ctx, "drafts", "d", client.Document{Content: client.Content{Text: "second"}}, nil)

	// Write only over the version read: someone wrote meanwhile.
	_, err := c.PutContext(ctx, "drafts", "d", client.Document{Content: client.Content{Text: "third"}},
		&client.WriteOptions{IfMatch: v1.ETag})
	fmt.Println(errors.Is(err, client.ErrFailedPrecondition))
	// Output:
	// true
}

func ExampleClient_Contexts() {
	ctx := context.Background()
	c, _ := client.New(kvdbURL)
	c.CreateTopic(ctx, client.Topic{Name: "notes"})
	for _, id := range []string{"n3", "n1", "n2", "n5", "n4"} {
		c.PutContext(ctx, "notes", id, client.Document{Content: client.Content{Text: "note " + id}}, nil)
	}
	// Every context of the topic, two per request, in id order.
	for doc, err := range c.Contexts(ctx, "notes", client.ListOptions{Limit: 2}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(doc.Metadata.ID)
	}
	// Output:
	// n1
	// n2
	// n3
	// n4
	// n5
}

func ExampleClient_Search() {
	ctx := context.Background()
	c, _ := client.New(kvdbURL)
	c.CreateTopic(ctx, client.Topic{Name: "kb"})
	// The router embeds each context with its -embed-model.
	c.PutContext(ctx, "kb", "rivers", client.Document{Content: client.Content{Text: "rivers flow to the ocean"}}, nil)
	c.PutContext(ctx, "kb", "pianos", client.Document{Content: client.Content{Text: "a piano has keys and strings"}}, nil)
	results, err := c.Search(ctx, "kb", client.SearchRequest{Query: "rivers and the ocean", K: 1})
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range results {
		fmt.Println(r.Metadata.ID)
	}
	// Output:
	// rivers
}

func ExampleClient_ChatStream() {
	ctx := context.Background()
	c, _ := client.New(kvdbURL)
	c.CreateTopic(ctx, client.Topic{Name: "chats"})
	for chunk, err := range c.ChatStream(ctx, "chats", "conv-1", client.ChatRequest{Message: "hello there"}) {
		if err != nil {
			log.Fatal(err)
		}
		if chunk.Done {
			fmt.Printf("\n(%d messages stored)\n", chunk.MessagesCount)
			break
		}
		fmt.Print(chunk.Message.Content)
	}
	// Output:
	// You said: hello there
	// (2 messages stored)
}

func ExampleClient_Backup() {
	ctx := context.Background()
	c, _ := client.New(kvdbURL)
	c.CreateTopic(ctx, client.Topic{Name: "archive-me"})
	c.PutContext(ctx, "archive-me", "a", client.Document{Content: client.Content{Text: "keep me"}}, nil)

	var archive bytes.Buffer // a file, in real life
	m, err := c.Backup(ctx, &archive, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("sections:", len(m.Sections))
	if _, err := backup.Verify(bytes.NewReader(archive.Bytes())); err != nil {
		log.Fatal(err)
	}
	fmt.Println("verified")

	// Restoring into the same cluster changes nothing: every record is
	// already there at the same version.
	rep, err := c.Restore(ctx, bytes.NewReader(archive.Bytes()), client.RestoreOptions{DryRun: true})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("would apply:", rep.Applied, "records:", rep.Records == m.Records)
	// Output:
	// sections: 1
	// verified
	// would apply: 0 records: true
}
