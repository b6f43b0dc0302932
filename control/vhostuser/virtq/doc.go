// Package virtq is the device side of virtio-net split virtqueues in a
// frontend's guest memory: the memory table (Map, Memory: regions mapped
// from the frontend's files, addresses translated with every bound
// checked), the rings (Ring: indices, notification suppression), and the
// descriptor chains, walked a checked segment at a time, that frames are
// copied out of (TakeFrame) and into (PutFrame, with the virtio-net
// header and MRG_RXBUF's num_buffers).
//
// Nothing the driver wrote is trusted: a chain longer than its table, a
// buffer outside every region, an address and length that overflow, a
// nested or malformed indirect table, an index past the ring's size each
// give an error, never an access outside the mapped slices.
package virtq
