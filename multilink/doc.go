// Package multilink is the forwarding core of multifs: one host, any number
// of links, and the rule between them:
//
//	host ──frame──▶ every link        (so two open links mean duplicates)
//	link ──frame──▶ host only         (never link to link)
//
// A Multilink knows nothing about sockets, handshakes or FUSE: a peer is a
// Conn (package conn's seam: one frame per message, one receive entry
// point, Receive) that package control hands over once the
// peer has joined (Multilink.Admit). The Multilink owns the peer from then
// on: its Port runs the peer's reader goroutine, counts its traffic, and
// closes it exactly once, by whichever way comes first (the close file, the
// peer's EOF, a socket error, shutdown).
//
// No peer can stall the others, but sends do wait, in one direction only.
// Towards a link a full socket never makes anyone wait: the frames go to the
// link's queue, and once that is full they are dropped. Towards the host
// the sender waits up to HostWait for room, then drops; a host that let a
// whole HostWait pass is not waited for again until it takes frames at
// once. The constants' comments in port.go say why.
//
// # The path of a frame
//
// The functions are listed in the order a frame meets them. FD and
// hotLoop are package control/engine's (recvBatchOnce, tapReadOnce and
// finishRecv are FD's methods): every production Conn is an engine.FD, a
// vde-2 data socket (SOCKDIR/link.N, SOCKDIR/host.N), a seqpacket
// connection, or a tap device opened for --host; except a vhost-user
// host, package control/vhostuser's Conn, whose frames move through its
// guest's rings instead of a socket; tests use the same seam
// with package conntest's fake peer. Every peer enters through
// Multilink.Admit (from control's Server.join for vde-2, Server.joinSeqpacket
// for seqpacket, Server.joinVhostUser for vhost-user, or cmd/multifs's
// AttachHost of Engine.OpenTap's tap),
// which starts the port's reader, Port.readLoop, on a goroutine of its own.
//
// Host to links:
//
//	host peer                   writes a frame: a datagram, a seqpacket message or a tap frame
//	Port.readLoop               the host's reader: Conn.Receive with the port's reader
//	  FD.Receive                the engine's receive loop
//	    FD.recvBatch            a host's socket waits on its own thread: FD.io, hotWait
//	                            (poll(2)), then park
//	    hotLoop.serve, .step    a tap host, once busy, is served by the hot loop instead
//	      recvBatchOnce         reader.Get (batches.get), then one recvmmsg of up to BatchSize
//	                            frames; found nothing: reader.Put. A tap: tapReadOnce, a read(2) a frame
//	      finishRecv            each frame's length into the batch's sizes
//	  reader.Deliver
//	    Port.forward            bad sizes dropped; rx counted; views into the batch passed on
//	      Multilink.fromHost    the copy-on-write list of links, read without a lock;
//	                            no link: dropped_no_link
//	        Port.send           for each link, under the link's out lock:
//	          TrySendBatch      nothing queued: sendmmsg what the socket takes, never waiting
//	          frameQueue.push   the rest, copied into the link's queue (queue.go)
//	          go Port.drain     one writer per link with a queue: frameQueue.peek,
//	                            FD.SendBatchWait (a second at a time), frameQueue.pop
//	    batches.put             the batch goes back to its pool
//
// Link to host:
//
//	link peer                   writes a frame: a datagram or a seqpacket message
//	Port.readLoop               the link's reader
//	  FD.Receive
//	    FD.waitIdle, park       idle: the goroutine parks, its descriptor armed one-shot in
//	                            the engine's own epoll (poller.go)
//	    hotLoop.serve, .step    busy: the hot loop (hotloop.go) receives and delivers on its
//	                            one thread, until the link stays empty for hotIdle
//	      recvBatchOnce         reader.Get (batches.get): a full batch, or a one-frame one past
//	                            fullBatches
//	      finishRecv
//	  reader.Deliver
//	    Port.forward            as above, and the port's last-rx time (idle_ms), once a batch
//	      Multilink.fromLink    the host now; none, or one closed since: dropped_no_host
//	        Port.sendToHost     on the host, under the host's out lock (the links take turns):
//	          dedup.filter      two or more links open: the copies of what another link
//	                            brought are dropped (dedup.go); one link: dedup.record
//	        Port.sendLocked
//	          SendBatchWait     sendmmsg (a tap host: a write(2) a frame), waiting up to
//	                            HostWait for room
//	          TrySendBatch      instead, without waiting, while the host is stuck: it let the
//	                            last HostWait pass, and stays so until a batch goes whole
//	    batches.put
//
// Where a frame waits. Until it is read it waits in the kernel, in the
// peer's socket; the reader waiting for it holds no buffer. Once read it
// waits in two places only: in a link's queue, for that link's Port.drain,
// and in SendBatchWait towards the host, for up to HostWait. That wait runs
// on the thread of the reader that is sending: for a link served by the hot
// loop, the loop's, so the loop's other members wait too, as they would in
// the reference's single loop (whose writes to its host block); the wait is
// bounded, and a stuck host is not waited for again. A waiting send polls
// (hotWait) for a while, then parks (park).
//
// Where a frame is dropped, and where it is counted:
//
//   - too short (< MinFrame) or too long (> MaxFrame, seen through MSG_TRUNC,
//     never truncated): Port.forward, the receiving port's rx_dropped;
//   - no host attached, or it detached after fromLink looked: the
//     multilink's dropped_no_host; no link open: dropped_no_link (Totals);
//   - a copy of a frame another link brought within the dedup window:
//     Port.sendToHost, the link's rx_dup_dropped and the multilink's
//     dup_dropped;
//   - the peer has left (Port.Leave) and its port is draining what it
//     sent: nothing is sent to it (a send to a departed datagram peer would
//     make the kernel discard what it sent us), its tx_dropped;
//   - the host's socket full for HostWait, or at once while stuck; a link's
//     queue full (QueueBytes) or all queues full (TotalQueueBytes); a
//     socket error, or a close while frames were queued: Port.send or
//     Port.drain, the destination port's tx_dropped.
//
// A link that closes after fromHost read the list gets nothing and counts
// nothing: Port.send reports false, and the frames were not for it.
//
// # Who owns a buffer when
//
// Frames are received into a batch (batch.go): BatchSize buffers of
// MaxFrame+1 bytes in one array, from a pool. One port's reader owns at
// most one batch at a time:
//
//  1. The Conn calls the port's reader's Get right before each receive
//     attempt, and Put at once if the attempt found nothing: a reader that
//     waits holds no batch, so idle peers hold no buffer memory. It calls
//     Get, Put and Deliver one at a time and has given back every batch
//     before Receive returns (package conn's contract), though it may call
//     them on the hot loop's thread while the port's goroutine waits in
//     Receive.
//  2. Deliver lends the batch's frames, as views, to Port.forward and on to
//     fromHost or fromLink and Port.send, for the length of the call only.
//     Before Port.send returns, every frame has been sent (the kernel copied
//     it), copied into a queue, or dropped; a Conn's send methods keep no
//     frame either. So Deliver can put the batch back at once.
//  3. A queued frame belongs to its link's frameQueue, under the port's out
//     lock. While the queue is not empty only Port.drain sends to that link:
//     it sends views of the oldest frames (frameQueue.peek) without the
//     lock, which is safe because only it removes frames (frameQueue.pop,
//     frameQueue.reset) and push only appends; a chunk goes back (putChunk)
//     once pop or reset has emptied it.
//
// The batches out at once are bounded (fullBatches, plus the host's), so
// links piled up behind a slow host cannot each hold a full one; the
// queues' memory is bounded by QueueBytes and TotalQueueBytes.
//
// Measured costs of this path are in docs/performance.md.
package multilink
