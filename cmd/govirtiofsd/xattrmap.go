package main

import "github.com/govirtiofs/govirtiofs/xattrmap"

// xattrMapper is a parsed --xattrmap.
type xattrMapper = *xattrmap.Map

// parseXattrMap parses --xattrmap rules (virtiofsd's rule language).
func parseXattrMap(s string) (xattrMapper, error) { return xattrmap.Parse(s) }
