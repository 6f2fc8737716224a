package router

// Fuzz targets for everything that reads bytes a client (or a shard) chose.
// Seeds live in testdata/fuzz/<target>/ beside the f.Add ones; CI runs each
// target for a few seconds (.ci/run). None may panic, and each checks what
// it can of its contract.
