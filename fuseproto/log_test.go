package fuseproto

import (
	"io"

	"github.com/hashicorp/go-hclog"
)

func testLogger(w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: w, Level: hclog.Debug})
}
