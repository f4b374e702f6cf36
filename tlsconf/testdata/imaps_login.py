"""IMAPS login with Python's imaplib, verifying the server certificate.

Usage: imaps_login.py CAFILE SERVERNAME PORT USER PASSWORD
Connects to 127.0.0.1:PORT, sends SERVERNAME as SNI and verifies the
certificate for it against CAFILE only. Prints the LOGIN reply.
"""
import imaplib
import socket
import ssl
import sys

cafile, name, port, user, password = sys.argv[1:6]


class LoopbackIMAP4SSL(imaplib.IMAP4_SSL):
    # The name does not resolve outside the test; connect to loopback and
    # still verify the certificate for the name.
    def _create_socket(self, timeout):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


# With cafile given, the system roots are not loaded: only CAFILE counts.
ctx = ssl.create_default_context(cafile=cafile)
conn = LoopbackIMAP4SSL(host=name, port=int(port), ssl_context=ctx, timeout=10)
typ, data = conn.login(user, password)
print(typ, data[0].decode())
conn.logout()
