package testkit

import (
	"os"
	"sync"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

func osMkdirTemp() (string, error) { return os.MkdirTemp("", "imstream-bin-") }
