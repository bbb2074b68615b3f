package main

import "errors"

// xattrMapper is a parsed --xattrmap.
type xattrMapper interface{}

// parseXattrMap parses --xattrmap rules.
func parseXattrMap(s string) (xattrMapper, error) {
	return nil, errors.New("--xattrmap is not built yet")
}
