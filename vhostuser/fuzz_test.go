package vhostuser_test

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/govirtiofs/govirtiofs/vhostuser"
	"github.com/govirtiofs/govirtiofs/vhostuser/vutest"
	"github.com/govirtiofs/govirtiofs/virtqueue"
)

// FuzzDecoders runs every payload decoder on arbitrary bytes; whatever
// decodes must encode back to the same bytes.
func FuzzDecoders(f *testing.F) {
	f.Add(vhostuser.VringState{Index: 1, Num: 256}.Encode())
	f.Add(vhostuser.VringAddr{Index: 2, Desc: 0x1000, Used: 0x3000, Avail: 0x2000}.Encode())
	f.Add(vhostuser.EncodeMemTable([]virtqueue.RegionSpec{{GuestAddr: 0, Size: 4096, UserAddr: 1 << 40}}))
	f.Add(vhostuser.EncodeMemReg(virtqueue.RegionSpec{GuestAddr: 1 << 32, Size: 1 << 20}))
	f.Add(vhostuser.ConfigAccess{Offset: 4, Data: []byte("tag")}.Encode())
	f.Add(vhostuser.EncodeU64(42))
	f.Add(vhostuser.LogDescription{Size: 4096, Offset: 8}.Encode())
	f.Add(vhostuser.DeviceStateTransfer{Direction: vhostuser.TransferLoad}.Encode())
	f.Fuzz(func(t *testing.T, p []byte) {
		if h, err := vhostuser.DecodeHeader(p); err == nil && !bytes.Equal(h.Encode(nil), p[:vhostuser.HeaderSize]) {
			t.Fatal("header round trip")
		}
		if v, err := vhostuser.DecodeU64(p); err == nil && !bytes.Equal(vhostuser.EncodeU64(v), p) {
			t.Fatal("u64 round trip")
		}
		if s, err := vhostuser.DecodeVringState(p); err == nil && !bytes.Equal(s.Encode(), p) {
			t.Fatal("vring state round trip")
		}
		if a, err := vhostuser.DecodeVringAddr(p); err == nil && !bytes.Equal(a.Encode(), p) {
			t.Fatal("vring address round trip")
		}
		if rs, err := vhostuser.DecodeMemTable(p); err == nil {
			if len(rs) > vhostuser.MaxMemTableRegions {
				t.Fatalf("%d regions decoded", len(rs))
			}
			q := vhostuser.EncodeMemTable(rs)
			if !bytes.Equal(q[8:], p[8:]) || !bytes.Equal(q[:4], p[:4]) {
				t.Fatal("memory table round trip")
			}
		}
		if r, err := vhostuser.DecodeMemReg(p); err == nil && !bytes.Equal(vhostuser.EncodeMemReg(r)[8:], p[8:]) {
			t.Fatal("memory region round trip")
		}
		if l, err := vhostuser.DecodeLogDescription(p); err == nil && !bytes.Equal(l.Encode(), p) {
			t.Fatal("log description round trip")
		}
		if d, err := vhostuser.DecodeDeviceStateTransfer(p); err == nil && !bytes.Equal(d.Encode(), p) {
			t.Fatal("device state transfer round trip")
		}
		if c, err := vhostuser.DecodeConfigAccess(p); err == nil {
			if len(c.Data) > vhostuser.MaxConfigSize || !bytes.Equal(c.Encode(), p) {
				t.Fatal("config access round trip")
			}
		}
	})
}

func msg(req vhostuser.Request, flags uint32, payload []byte) []byte {
	return append(vhostuser.Header{Request: req, Flags: flags, Size: uint32(len(payload))}.Encode(nil), payload...)
}

// FuzzSession feeds an arbitrary byte stream to a back-end session (without
// fds): it must end without a panic when the stream ends.
func FuzzSession(f *testing.F) {
	f.Add(bytes.Join([][]byte{
		msg(vhostuser.SetOwner, 1, nil),
		msg(vhostuser.GetFeatures, 1, nil),
		msg(vhostuser.SetProtocolFeatures, 1, vhostuser.EncodeU64(vhostuser.ProtocolReplyAck)),
		msg(vhostuser.SetVringNum, 9, vhostuser.VringState{Index: 1, Num: 64}.Encode()),
		msg(vhostuser.SetVringAddr, 9, vhostuser.VringAddr{Index: 1}.Encode()),
		msg(vhostuser.SetVringKick, 9, vhostuser.EncodeU64(1|vhostuser.VringNoFD)),
		msg(vhostuser.SetVringEnable, 9, vhostuser.VringState{Index: 1, Num: 1}.Encode()),
		msg(vhostuser.GetVringBase, 1, vhostuser.VringState{Index: 1}.Encode()),
		msg(vhostuser.GetConfig, 1, vhostuser.ConfigAccess{Data: make([]byte, 8)}.Encode()),
		msg(vhostuser.ResetDevice, 9, nil),
	}, nil))
	f.Add(msg(vhostuser.SetMemTable, 9, vhostuser.EncodeMemTable(make([]virtqueue.RegionSpec, 2))))
	// Migration: logging and a device state transfer, all without the fds
	// they need.
	f.Add(bytes.Join([][]byte{
		msg(vhostuser.SetProtocolFeatures, 1, vhostuser.EncodeU64(vhostuser.ProtocolReplyAck|vhostuser.ProtocolLogShmfd|vhostuser.ProtocolDeviceState)),
		msg(vhostuser.SetFeatures, 9, vhostuser.EncodeU64(virtqueue.FeatureVersion1|virtqueue.FeatureLogAll|vhostuser.FeatureProtocolFeatures)),
		msg(vhostuser.SetLogBase, 9, vhostuser.LogDescription{Size: 4096}.Encode()),
		msg(vhostuser.SetVringAddr, 9, vhostuser.VringAddr{Index: 1, Flags: vhostuser.VringFLog, Log: 0x3000}.Encode()),
		msg(vhostuser.SetDeviceStateFD, 1, vhostuser.DeviceStateTransfer{Direction: vhostuser.TransferSave}.Encode()),
		msg(vhostuser.CheckDeviceState, 1, nil),
	}, nil))
	f.Add(msg(99, 1, []byte{1, 2, 3}))
	f.Fuzz(func(t *testing.T, stream []byte) {
		front, back := vutest.Socketpair(t)
		dev := newEchoDev(3, []byte("config space"))
		b := vhostuser.NewBackend(dev, vhostuser.Options{})
		done := make(chan error, 1)
		go func() { done <- b.ServeConn(context.Background(), back) }()
		go io.Copy(io.Discard, front)
		front.SetWriteDeadline(time.Now().Add(5 * time.Second))
		front.Write(stream)
		front.CloseWrite()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("session did not end with its input")
		}
	})
}
