"""A TCP relay on loopback in front of a server, counting the bytes the server sends:
what the store sends, whoever asks (mounts, proxies). Stopped by stop(), which closes
every socket and joins every thread."""
import socket
import threading


class CountingRelay:
    def __init__(self, port, host="127.0.0.1"):
        self.target = (host, port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.sent = 0
        self.lock = threading.Lock()
        self.stopping = False
        self.conns = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(self.target, timeout=10)
                s.settimeout(None)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, s]
                for args in ((c, s, False), (s, c, True)):
                    t = threading.Thread(target=self._pipe, args=args, daemon=True)
                    self.threads.append(t)
                    t.start()

    def _pipe(self, a, b, count):
        try:
            while True:
                data = a.recv(1 << 20)
                if not data:
                    break
                if count:
                    with self.lock:
                        self.sent += len(data)
                b.sendall(data)
        except OSError:
            pass
        finally:
            for x in (a, b):
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self):
        self.stopping = True
        self.sock.close()
        with self.lock:
            conns = list(self.conns)
        for x in conns:
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            x.close()
        for t in self.threads:
            t.join(timeout=10)
