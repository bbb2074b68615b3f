package fuseproto

import "unsafe"

// The only place where wire structs meet raw bytes. Structs are copied byte
// for byte (no pointer into a request buffer is ever kept, and no alignment
// of the buffer is assumed), which is correct because every struct in
// abi.go has the kernel's little-endian layout with no implicit padding;
// abi_test.go checks that.

// decode copies the first sizeof(T) bytes of b into v. The caller has
// checked len(b).
func decode[T any](b []byte, v *T) {
	copy(unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v)), b)
}

// encode copies v into the start of b and returns the bytes written. The
// caller has checked len(b).
func encode[T any](b []byte, v *T) int {
	return copy(b, unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v)))
}

// sizeOf returns the wire size of T.
func sizeOf[T any]() int {
	var v T
	return int(unsafe.Sizeof(v))
}

// Decode copies the first bytes of b into v, which must be one of the wire
// structs of this package, and reports whether b was long enough. It is for
// transports and tests; the Server uses its own checked paths.
func Decode[T any](b []byte, v *T) bool {
	if len(b) < sizeOf[T]() {
		return false
	}
	decode(b, v)
	return true
}

// Encode appends the wire form of v, one of the structs of this package, to
// b.
func Encode[T any](b []byte, v *T) []byte {
	n := len(b)
	b = append(b, make([]byte, sizeOf[T]())...)
	encode(b[n:], v)
	return b
}

// unsafeBytes returns the bytes of the wire struct v.
func unsafeBytes[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}
