package authfile

// What the external tests (package authfile_test) read of the package's
// insides.
var (
	ParseAuth    = parseAuth
	SecretID     = secretID
	SecretPrefix = secretPrefix
	KeyIDBytes   = keyIDBytes
	SaltBytes    = saltBytes
)
