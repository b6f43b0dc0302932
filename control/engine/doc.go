// Package engine is multifs's I/O engine: non-blocking descriptors (the
// data sockets of joined peers and a tap host) that wait outside Go's
// network poller, move frames in batches, and are served, while busy, by
// one loop.
//
// An Engine (New) holds the waits: the daemon makes one, hands it to
// control's Server and opens its tap host with it, and closes it at its
// stop; tests make their own. An FD is made by Engine.NewSocket (a
// connected data socket) or Engine.OpenTap, with its policy (Options)
// fixed then; Engine.NewStream makes one of a byte stream that carries
// frames as QEMU's -netdev stream does. It is a conn.Conn (package
// multilink/conn, the seam to the multilink): frames are received by
// Receive, into the batches of the Receiver it is given, and sent by
// TrySendBatch and SendBatchWait, with recvmmsg and sendmmsg (batch.go),
// one read(2) or write(2) per frame for a tap (tap.go), big reads and
// many frames per sendmsg for a stream, never a frame cut (stream.go).
//
// A descriptor waits in one of three ways (poller.go): in poll(2) on its
// own thread right after I/O (hot), parked in the engine's shared epoll
// once idle, or, as a busy receiver, served by the hot loop, which
// receives and forwards for every busy receiver on one thread
// (hotloop.go). Why not Go's poller: its wake-ups, one or two per frame,
// cost more than forwarding the frame (docs/performance.md).
//
// Admission (who may join, the socket directory) is package control's;
// the client side of the protocols, for tests, is package control/client.
package engine
