package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/govirtiofs/govirtiofs/virtqueue"
)

// Request is the type of a front-end message (the header's request field).
type Request uint32

// Front-end message types (vhost-user.rst "Front-end message types").
const (
	GetFeatures         Request = 1
	SetFeatures         Request = 2
	SetOwner            Request = 3
	ResetOwner          Request = 4
	SetMemTable         Request = 5
	SetLogBase          Request = 6
	SetLogFD            Request = 7
	SetVringNum         Request = 8
	SetVringAddr        Request = 9
	SetVringBase        Request = 10
	GetVringBase        Request = 11
	SetVringKick        Request = 12
	SetVringCall        Request = 13
	SetVringErr         Request = 14
	GetProtocolFeatures Request = 15
	SetProtocolFeatures Request = 16
	GetQueueNum         Request = 17
	SetVringEnable      Request = 18
	SetBackendReqFD     Request = 21
	GetConfig           Request = 24
	SetConfig           Request = 25
	GetInflightFD       Request = 31
	SetInflightFD       Request = 32
	ResetDevice         Request = 34
	GetMaxMemSlots      Request = 36
	AddMemReg           Request = 37
	RemMemReg           Request = 38
	SetStatus           Request = 39
	GetStatus           Request = 40
	SetDeviceStateFD    Request = 42
	CheckDeviceState    Request = 43
)

var requestNames = map[Request]string{
	GetFeatures: "GET_FEATURES", SetFeatures: "SET_FEATURES", SetOwner: "SET_OWNER",
	ResetOwner: "RESET_OWNER", SetMemTable: "SET_MEM_TABLE", SetLogBase: "SET_LOG_BASE",
	SetLogFD: "SET_LOG_FD", SetVringNum: "SET_VRING_NUM", SetVringAddr: "SET_VRING_ADDR",
	SetVringBase: "SET_VRING_BASE", GetVringBase: "GET_VRING_BASE", SetVringKick: "SET_VRING_KICK",
	SetVringCall: "SET_VRING_CALL", SetVringErr: "SET_VRING_ERR",
	GetProtocolFeatures: "GET_PROTOCOL_FEATURES", SetProtocolFeatures: "SET_PROTOCOL_FEATURES",
	GetQueueNum: "GET_QUEUE_NUM", SetVringEnable: "SET_VRING_ENABLE",
	SetBackendReqFD: "SET_BACKEND_REQ_FD", GetConfig: "GET_CONFIG", SetConfig: "SET_CONFIG",
	GetInflightFD: "GET_INFLIGHT_FD", SetInflightFD: "SET_INFLIGHT_FD", ResetDevice: "RESET_DEVICE",
	GetMaxMemSlots: "GET_MAX_MEM_SLOTS", AddMemReg: "ADD_MEM_REG", RemMemReg: "REM_MEM_REG",
	SetStatus: "SET_STATUS", GetStatus: "GET_STATUS",
	SetDeviceStateFD: "SET_DEVICE_STATE_FD", CheckDeviceState: "CHECK_DEVICE_STATE",
}

// String returns the request's name without the VHOST_USER_ prefix.
func (r Request) String() string {
	if s, ok := requestNames[r]; ok {
		return s
	}
	return fmt.Sprintf("REQUEST_%d", uint32(r))
}

// hasReply reports whether the request always gets an explicit reply with
// a payload, with or without NEED_REPLY, and the connection cannot go on
// when it fails.
func (r Request) hasReply() bool {
	switch r {
	case GetFeatures, GetProtocolFeatures, GetVringBase, GetQueueNum, GetMaxMemSlots, GetConfig, GetStatus:
		return true
	}
	return false
}

// hasStatusReply reports whether the request always gets an explicit u64
// reply that carries its success or failure, with or without NEED_REPLY.
// SET_LOG_BASE has one too, but only once LOG_SHMFD is negotiated.
func (r Request) hasStatusReply() bool {
	return r == SetDeviceStateFD || r == CheckDeviceState
}

// hasPayload reports whether the request carries a payload; the spec gives
// the others none ("N/A"), and a payload sent with them is refused as
// malformed.
func (r Request) hasPayload() bool {
	switch r {
	case GetFeatures, SetOwner, ResetOwner, GetProtocolFeatures, GetQueueNum,
		SetBackendReqFD, ResetDevice, GetMaxMemSlots, GetStatus, CheckDeviceState:
		return false
	}
	return true
}

// Header flags.
const (
	FlagVersion   = 0x1    // version 1 in bits 0-1
	FlagVersionMk = 0x3    // the version bits
	FlagReply     = 1 << 2 // set on every reply from the back-end
	FlagNeedReply = 1 << 3 // the front-end asks for a REPLY_ACK
)

// Protocol feature bits (VHOST_USER_PROTOCOL_F_*).
const (
	ProtocolMQ                = 1 << 0
	ProtocolLogShmfd          = 1 << 1
	ProtocolReplyAck          = 1 << 3
	ProtocolBackendReq        = 1 << 5
	ProtocolConfig            = 1 << 9
	ProtocolInflightShmfd     = 1 << 12
	ProtocolResetDevice       = 1 << 13
	ProtocolConfigureMemSlots = 1 << 15
	ProtocolStatus            = 1 << 16
	ProtocolDeviceState       = 1 << 19
)

// FeatureProtocolFeatures is VHOST_USER_F_PROTOCOL_FEATURES (virtio
// feature bit 30): GET/SET_PROTOCOL_FEATURES are supported.
const FeatureProtocolFeatures = 1 << 30

// Wire limits.
const (
	HeaderSize = 12
	// MaxPayload is the largest payload accepted; the largest legitimate
	// one is a GET_CONFIG of 256 bytes (268) or a full SET_MEM_TABLE
	// (264). A larger size ends the connection.
	MaxPayload = 4096
	// MaxFDs is the most file descriptors one message may carry.
	MaxFDs = 8
	// MaxMemTableRegions is the most regions SET_MEM_TABLE carries
	// (VHOST_MEMORY_BASELINE_NREGIONS).
	MaxMemTableRegions = 8
	// MaxConfigSize is the largest config-space access.
	MaxConfigSize = 256
	// VringIndexMask and VringNoFD split the u64 of SET_VRING_KICK, CALL
	// and ERR: the vring index in bits 0-7, and bit 8 set when no fd is
	// passed. The reply to SET_DEVICE_STATE_FD uses the same layout: an
	// error code in bits 0-7, bit 8 set when the back-end returns no fd.
	VringIndexMask = 0xff
	VringNoFD      = 1 << 8
	// VringFLog is VHOST_VRING_F_LOG in the flags of SET_VRING_ADDR:
	// writes to the used ring are logged at the log address.
	VringFLog = 1 << 0
)

// Device state transfer parameters of SET_DEVICE_STATE_FD.
const (
	// TransferSave: the back-end writes its state into the fd (source).
	TransferSave = 0
	// TransferLoad: the back-end reads its state from the fd
	// (destination).
	TransferLoad = 1
	// PhaseStopped: the only phase defined: the device and all its
	// vrings are stopped.
	PhaseStopped = 0
)

// Payload sizes.
const (
	u64Size        = 8
	vringStateSize = 8
	vringAddrSize  = 40
	regionSize     = 32
	memRegMsgSize  = 8 + regionSize // padding u64 + region
	configHdrSize  = 12
	logSize        = 16
	transferSize   = 8
)

// Header is the 12-byte message header.
type Header struct {
	Request Request
	Flags   uint32
	Size    uint32
}

// Encode appends the header to b.
func (h Header) Encode(b []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(h.Request))
	b = binary.LittleEndian.AppendUint32(b, h.Flags)
	return binary.LittleEndian.AppendUint32(b, h.Size)
}

// DecodeHeader reads a header from the first HeaderSize bytes of b.
func DecodeHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, errMalformed
	}
	return Header{
		Request: Request(binary.LittleEndian.Uint32(b)),
		Flags:   binary.LittleEndian.Uint32(b[4:]),
		Size:    binary.LittleEndian.Uint32(b[8:]),
	}, nil
}

var errMalformed = errors.New("vhostuser: malformed payload")

// DecodeU64 decodes a u64 payload.
func DecodeU64(p []byte) (uint64, error) {
	if len(p) != u64Size {
		return 0, fmt.Errorf("%w: u64 payload of %d bytes", errMalformed, len(p))
	}
	return binary.LittleEndian.Uint64(p), nil
}

// EncodeU64 returns a u64 payload.
func EncodeU64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// VringState is the vring state description: a vring index and a number.
type VringState struct {
	Index uint32
	Num   uint32
}

// Encode returns the payload.
func (s VringState) Encode() []byte {
	b := binary.LittleEndian.AppendUint32(nil, s.Index)
	return binary.LittleEndian.AppendUint32(b, s.Num)
}

// DecodeVringState decodes a vring state payload.
func DecodeVringState(p []byte) (VringState, error) {
	if len(p) != vringStateSize {
		return VringState{}, fmt.Errorf("%w: vring state of %d bytes", errMalformed, len(p))
	}
	return VringState{binary.LittleEndian.Uint32(p), binary.LittleEndian.Uint32(p[4:])}, nil
}

// VringAddr is the vring address description; the addresses are in the
// front-end's address space.
type VringAddr struct {
	Index uint32
	Flags uint32
	Desc  uint64
	Used  uint64
	Avail uint64
	Log   uint64
}

// Encode returns the payload.
func (a VringAddr) Encode() []byte {
	b := binary.LittleEndian.AppendUint32(nil, a.Index)
	b = binary.LittleEndian.AppendUint32(b, a.Flags)
	for _, v := range []uint64{a.Desc, a.Used, a.Avail, a.Log} {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

// DecodeVringAddr decodes a vring address payload.
func DecodeVringAddr(p []byte) (VringAddr, error) {
	if len(p) != vringAddrSize {
		return VringAddr{}, fmt.Errorf("%w: vring address of %d bytes", errMalformed, len(p))
	}
	le := binary.LittleEndian
	return VringAddr{
		Index: le.Uint32(p), Flags: le.Uint32(p[4:]),
		Desc: le.Uint64(p[8:]), Used: le.Uint64(p[16:]), Avail: le.Uint64(p[24:]), Log: le.Uint64(p[32:]),
	}, nil
}

func encodeRegion(b []byte, r virtqueue.RegionSpec) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(r.GuestAddr))
	b = binary.LittleEndian.AppendUint64(b, r.Size)
	b = binary.LittleEndian.AppendUint64(b, r.UserAddr)
	return binary.LittleEndian.AppendUint64(b, r.MmapOffset)
}

func decodeRegion(p []byte) virtqueue.RegionSpec {
	le := binary.LittleEndian
	return virtqueue.RegionSpec{
		GuestAddr: virtqueue.GuestAddress(le.Uint64(p)), Size: le.Uint64(p[8:]),
		UserAddr: le.Uint64(p[16:]), MmapOffset: le.Uint64(p[24:]),
	}
}

// EncodeMemTable returns a SET_MEM_TABLE payload.
func EncodeMemTable(regions []virtqueue.RegionSpec) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(regions)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	for _, r := range regions {
		b = encodeRegion(b, r)
	}
	return b
}

// DecodeMemTable decodes a SET_MEM_TABLE payload: a count, padding, and
// that many regions (at most MaxMemTableRegions).
func DecodeMemTable(p []byte) ([]virtqueue.RegionSpec, error) {
	if len(p) < 8 {
		return nil, fmt.Errorf("%w: memory table of %d bytes", errMalformed, len(p))
	}
	n := binary.LittleEndian.Uint32(p)
	if n > MaxMemTableRegions {
		return nil, fmt.Errorf("%w: %d regions in a memory table (at most %d)", errMalformed, n, MaxMemTableRegions)
	}
	if len(p) != 8+int(n)*regionSize {
		return nil, fmt.Errorf("%w: memory table of %d regions in %d bytes", errMalformed, n, len(p))
	}
	out := make([]virtqueue.RegionSpec, n)
	for i := range out {
		out[i] = decodeRegion(p[8+i*regionSize:])
	}
	return out, nil
}

// EncodeMemReg returns an ADD_MEM_REG or REM_MEM_REG payload.
func EncodeMemReg(r virtqueue.RegionSpec) []byte {
	return encodeRegion(make([]byte, 8), r)
}

// DecodeMemReg decodes the single memory region description.
func DecodeMemReg(p []byte) (virtqueue.RegionSpec, error) {
	if len(p) != memRegMsgSize {
		return virtqueue.RegionSpec{}, fmt.Errorf("%w: memory region of %d bytes", errMalformed, len(p))
	}
	return decodeRegion(p[8:]), nil
}

// ConfigAccess is the device config space description of GET_CONFIG and
// SET_CONFIG.
type ConfigAccess struct {
	Offset uint32
	Flags  uint32
	Data   []byte // Size bytes
}

// Encode returns the payload.
func (c ConfigAccess) Encode() []byte {
	b := binary.LittleEndian.AppendUint32(nil, c.Offset)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(c.Data)))
	b = binary.LittleEndian.AppendUint32(b, c.Flags)
	return append(b, c.Data...)
}

// DecodeConfigAccess decodes a config space payload whose size field must
// match the bytes that follow and be at most MaxConfigSize.
func DecodeConfigAccess(p []byte) (ConfigAccess, error) {
	if len(p) < configHdrSize {
		return ConfigAccess{}, fmt.Errorf("%w: config access of %d bytes", errMalformed, len(p))
	}
	off := binary.LittleEndian.Uint32(p)
	size := binary.LittleEndian.Uint32(p[4:])
	flags := binary.LittleEndian.Uint32(p[8:])
	if size > MaxConfigSize || int(size) != len(p)-configHdrSize {
		return ConfigAccess{}, fmt.Errorf("%w: config access of %d bytes carrying %d", errMalformed, size, len(p)-configHdrSize)
	}
	return ConfigAccess{Offset: off, Flags: flags, Data: p[configHdrSize:]}, nil
}

// LogDescription is the payload of SET_LOG_BASE (with LOG_SHMFD): the
// log's size in bytes and where it starts in the fd that comes with it.
type LogDescription struct {
	Size   uint64
	Offset uint64
}

// Encode returns the payload.
func (l LogDescription) Encode() []byte {
	b := binary.LittleEndian.AppendUint64(nil, l.Size)
	return binary.LittleEndian.AppendUint64(b, l.Offset)
}

// DecodeLogDescription decodes a log description payload.
func DecodeLogDescription(p []byte) (LogDescription, error) {
	if len(p) != logSize {
		return LogDescription{}, fmt.Errorf("%w: log description of %d bytes", errMalformed, len(p))
	}
	return LogDescription{binary.LittleEndian.Uint64(p), binary.LittleEndian.Uint64(p[8:])}, nil
}

// DeviceStateTransfer is the payload of SET_DEVICE_STATE_FD: the direction
// (TransferSave or TransferLoad) and the migration phase (PhaseStopped).
type DeviceStateTransfer struct {
	Direction uint32
	Phase     uint32
}

// Encode returns the payload.
func (t DeviceStateTransfer) Encode() []byte {
	b := binary.LittleEndian.AppendUint32(nil, t.Direction)
	return binary.LittleEndian.AppendUint32(b, t.Phase)
}

// DecodeDeviceStateTransfer decodes a device state transfer payload.
func DecodeDeviceStateTransfer(p []byte) (DeviceStateTransfer, error) {
	if len(p) != transferSize {
		return DeviceStateTransfer{}, fmt.Errorf("%w: device state transfer parameters of %d bytes", errMalformed, len(p))
	}
	return DeviceStateTransfer{binary.LittleEndian.Uint32(p), binary.LittleEndian.Uint32(p[4:])}, nil
}
