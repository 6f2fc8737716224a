// Package coord owns reading and writing records on their replicas:
// quorum reads with read repair, writes acknowledged by a quorum of every
// owner group (conditional ones decided at the key's primary; WriteTxn
// adds records placed with the key, in one transaction per owner), range
// reads of one ring key's records merged from a quorum (Range), the one
// Settle loop that plans again after a cluster-map change, fan-out and
// merge of pages and top-k results, and writes to every shard. It keeps no
// state beyond its Config and knows nothing of documents or HTTP.
package coord
