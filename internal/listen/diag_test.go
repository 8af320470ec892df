package listen

import (
	"encoding/binary"
	"fmt"
	"syscall"
)

// listenBacklog returns the accept queue limit (the backlog, as capped by the kernel) of the
// TCP socket listening on port, as `ss -lt` shows it: NETLINK_INET_DIAG reports it in
// idiag_wqueue for listening sockets.
func listenBacklog(family int, port int) (int, error) {
	const (
		netlinkInetDiag  = 4
		sockDiagByFamily = 20
		tcpListen        = 10
		reqLen           = 56 // struct inet_diag_req_v2
		msgMinLen        = 72 // struct inet_diag_msg
	)
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, netlinkInetDiag)
	if err != nil {
		return 0, fmt.Errorf("netlink socket: %w", err)
	}
	defer syscall.Close(fd)

	req := make([]byte, syscall.NLMSG_HDRLEN+reqLen)
	le := binary.NativeEndian // netlink headers are in host order
	le.PutUint32(req[0:], uint32(len(req)))
	le.PutUint16(req[4:], sockDiagByFamily)
	le.PutUint16(req[6:], syscall.NLM_F_REQUEST|syscall.NLM_F_DUMP)
	le.PutUint32(req[8:], 1) // seq
	body := req[syscall.NLMSG_HDRLEN:]
	body[0] = byte(family)
	body[1] = syscall.IPPROTO_TCP
	le.PutUint32(body[4:], 1<<tcpListen) // idiag_states
	if err := syscall.Sendto(fd, req, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if err != nil {
			return 0, fmt.Errorf("netlink receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return 0, fmt.Errorf("netlink parse: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case syscall.NLMSG_DONE:
				return 0, fmt.Errorf("no listening socket on port %d", port)
			case syscall.NLMSG_ERROR:
				return 0, fmt.Errorf("netlink error reply")
			case sockDiagByFamily:
				d := m.Data
				if len(d) < msgMinLen {
					continue
				}
				sport := int(binary.BigEndian.Uint16(d[4:6])) // id.idiag_sport, network order
				if sport == port {
					return int(le.Uint32(d[60:64])), nil // idiag_wqueue
				}
			}
		}
	}
}
