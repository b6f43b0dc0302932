// Package vhostuser is multifs as a vhost-user backend: a VM's virtio-net
// device served in the daemon, so that QEMU (-netdev vhost-user), libvirt
// (<interface type='vhostuser'>) or DPDK's virtio_user attach a guest as
// a multilink's host without a socket per frame. The frontend connects
// to SOCKDIR/host.vhost-user (package control admits it); a Conn then
// serves its requests (Serve) and is the host's conn.Conn: Receive takes
// the frames from the guest's transmit queue, the sends write frames
// into its receive queue's buffers. The rings and guest memory are
// package virtq's.
//
// Supported: one queue pair; VIRTIO_F_VERSION_1, VIRTIO_NET_F_MRG_RXBUF,
// VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC and
// VHOST_USER_F_PROTOCOL_FEATURES, with the protocol features MQ and
// REPLY_ACK. Not offered: offloads (frames are plain Ethernet), live
// migration (no LOG_ALL, no dirty log), packed rings, IOMMU, in-band
// notifications, polling rings.
//
// The frontend and its guest are untrusted. Every request is bounded
// (header, payload, descriptors); memory comes only from in-memory files
// (memfd, tmpfs, hugetlbfs), bounded in regions and size, and is touched
// only through bounds-checked slices, with memory faults turned into
// errors (a frontend may shrink its file). Kick eventfds are waited on,
// never read, and call eventfds are written from a goroutine of their
// own, so that a frontend's descriptor flags cannot block the data path.
// A bad chain drops its frame, counted; more than MaxFaults of them disconnect the
// frontend.
//
// Cheap when idle: nothing polls; the transmit queue waits in an epoll
// on its kick eventfd. Busy: kicks are suppressed (EVENT_IDX's
// avail_event left behind, or VRING_USED_F_NO_NOTIFY) while frames are
// there to take, frames move in batches, and the guest is signalled at
// most once per batch, when it asked (used_event).
package vhostuser
