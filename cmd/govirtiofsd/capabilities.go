package main

import "encoding/json"

// backendFeatures are the vhost-user backend features of the "fs" type
// that libvirt reads (docs/interop/vhost-user.json in QEMU):
// migrate-precopy (the device state travels with QEMU's migration) and
// separate-options (--option value, not only -o).
var backendFeatures = []string{"migrate-precopy", "separate-options"}

// capabilitiesJSON is what --print-capabilities prints: the backend's type
// and features, as libvirt expects from a vhost-user backend program.
func capabilitiesJSON() []byte {
	b, err := json.MarshalIndent(struct {
		Type     string   `json:"type"`
		Features []string `json:"features"`
	}{"fs", backendFeatures}, "", "  ")
	if err != nil {
		panic(err)
	}
	return append(b, '\n')
}
