"""A real Mosquitto running the shipped production.conf, and the clients the tests drive it with.

Shared by tests/test_broker_security.py (the broker's ACL and TLS against devices and readers)
and tests/test_broker_tls_client.py (eldercare's own clients over TLS): a throwaway PKI made with
the openssl CLI (:func:`make_pki`, :func:`make_client_cert`), a ``password_file`` made with
``mosquitto_passwd`` (:func:`write_passwords`), the broker itself (:class:`SecureMosquitto`) and
a synchronous paho-mqtt 2 test client (:class:`Peer`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import ssl
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from foundation.ports import free_port
from tests.services import Mosquitto

ROOT = Path(__file__).parent.parent
PRODUCTION_CONF = ROOT / "deploy" / "mosquitto" / "production.conf"
TIMEOUT_S = 5.0
#: openssl options for a new P-256 key, unencrypted.
_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _tool(name: str, *fallbacks: str) -> str:
    found = shutil.which(name) or next((f for f in fallbacks if Path(f).exists()), None)
    if found is None:
        raise RuntimeError(f"{name} is not installed (Debian packages openssl, mosquitto)")
    return found


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for localhost/127.0.0.1: (ca, cert, key)."""
    openssl = _tool("openssl")
    _run(openssl, "req", "-x509", *_EC, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
         "-subj", "/CN=eldercare test CA", cwd=d)
    _run(openssl, "req", "-new", *_EC, "-keyout", "server.key", "-out", "server.csr",
         "-subj", "/CN=localhost", cwd=d)
    # The client checks the address it dialled against the subjectAltName, not the CN.
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                  "basicConstraints=critical,CA:FALSE\n"
                                  "extendedKeyUsage=serverAuth\n")
    _run(openssl, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext", cwd=d)
    return d / "ca.crt", d / "server.crt", d / "server.key"


def make_client_cert(d: Path, name: str) -> tuple[Path, Path]:
    """A client certificate for ``name`` signed by the CA :func:`make_pki` left in ``d``:
    (cert, key)."""
    openssl = _tool("openssl")
    _run(openssl, "req", "-new", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr",
         "-subj", f"/CN={name}", cwd=d)
    (d / f"{name}.ext").write_text("basicConstraints=critical,CA:FALSE\n"
                                   "extendedKeyUsage=clientAuth\n")
    _run(openssl, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
         cwd=d)
    return d / f"{name}.crt", d / f"{name}.key"


def write_passwords(path: Path, passwords: dict[str, str]) -> None:
    """A Mosquitto password file, one ``mosquitto_passwd -b`` per user (throwaway passwords)."""
    tool = _tool("mosquitto_passwd", "/usr/bin/mosquitto_passwd")
    path.write_text("")
    for user, password in passwords.items():
        _run(tool, "-b", str(path), user, password, cwd=path.parent)


def render_production_conf(text: str, *, tls_port: int, local_port: int, files: dict[str, str],
                           user: str) -> str:
    """The shipped configuration with its ports, paths and run-as user replaced.

    Fails if a directive to replace is missing, so the test breaks when the shipped file loses
    its TLS, password file or ACL, rather than quietly testing something else.
    """
    ports = {"8883": tls_port, "1883": local_port}
    out, replaced = [], set()
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "listener":
            port, _, bind = value.partition(" ")
            line = f"listener {ports.pop(port)} {bind}".rstrip()
        elif key in files:
            line = f"{key} {files[key]}"
            replaced.add(key)
        assert key != "user", "production.conf should leave the run-as user to the package"
        out.append(line)
    assert not ports and replaced == set(files), (ports, set(files) - replaced)
    # As root, Mosquitto would switch to user "mosquitto", which cannot read the temp dir.
    return "\n".join([*out, f"user {user}", ""])


class SecureMosquitto(Mosquitto):
    """tests.services.Mosquitto running production.conf: ``port`` is TLS, ``local_port`` plain.

    ``acl`` is the ACL text; ``passwd`` a password file (copied: tests may rewrite the copy);
    ``ca``, ``cert`` and ``key`` the broker's PKI from :func:`make_pki`. With
    ``require_certificate`` the TLS listener also demands a client certificate signed by ``ca``
    (the shipped file leaves it off; a fleet with per-device certificates turns it on).
    """

    def __init__(self, workdir: Path, *, acl: str, passwd: Path, ca: Path, cert: Path,
                 key: Path, require_certificate: bool = False) -> None:
        super().__init__(workdir)
        self.local_port = free_port()
        self.acl_file = workdir / "acl"
        self.acl_file.write_text(acl)
        self.passwd_file = workdir / "passwd"  # its own copy: test_reload... rewrites it
        shutil.copyfile(passwd, self.passwd_file)
        conf = render_production_conf(
            PRODUCTION_CONF.read_text(), tls_port=self.port, local_port=self.local_port,
            user=pwd.getpwuid(os.geteuid()).pw_name, files={
                "password_file": str(self.passwd_file), "acl_file": str(self.acl_file),
                "cafile": str(ca), "certfile": str(cert), "keyfile": str(key),
                "persistence_location": f"{workdir}/",
                "log_dest": f"file {workdir}/mosquitto.log",
            })
        if require_certificate:
            assert "\nrequire_certificate false\n" in conf
            conf = conf.replace("\nrequire_certificate false\n", "\nrequire_certificate true\n")
        self.conf.write_text(conf)

    #: TLS first, the loopback listener after it: start() waits for both, so under load no
    #: test connects to the second before it is bound ("connection refused").
    LISTENERS = ("port", "local_port")

    def log(self) -> str:
        """What Mosquitto logged so far (connections name their login: ``u'<username>'``)."""
        return (self.workdir / "mosquitto.log").read_text(errors="replace")

    def reload(self) -> None:
        """SIGHUP: Mosquitto rereads the password file and the ACL."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)


class Peer:
    """One paho-mqtt 2 client: connects synchronously, records deliveries and ack reason codes."""

    def __init__(self, *, port: int, username: str | None, password: str | None,
                 ca: Path | None, protocol: MQTTProtocolVersion = mqtt.MQTTv5, client_id: str | None = None,
                 clean: bool = True, session_expiry_s: int = 0,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.protocol = protocol
        self._clean = clean
        self._expiry = session_expiry_s
        extra: dict[str, Any] = {} if protocol == mqtt.MQTTv5 else {"clean_session": clean}
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, protocol=protocol, reconnect_on_failure=False,
            client_id=client_id or f"{username or 'anon'}-{uuid.uuid4().hex[:8]}", **extra)
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls_context is not None:
            self.client.tls_set_context(tls_context)
        elif ca is not None:
            self.client.tls_set(ca_certs=str(ca))
        self.messages: list[tuple[str, bytes]] = []
        self.connack: ReasonCode | None = None
        self.session_present = False
        self.closed = False
        self._answered = threading.Event()
        self._changed = threading.Condition()
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._pubacks: dict[int, ReasonCode] = {}
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish

    # paho callbacks, on its network thread
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                    properties: Any = None) -> None:
        self.connack, self.session_present = rc, bool(flags.session_present)
        self._answered.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                       properties: Any = None) -> None:
        with self._changed:
            self.closed = True
            self._changed.notify_all()
        self._answered.set()  # a refused TLS handshake or CONNECT ends here, without CONNACK

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self._changed.notify_all()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      codes: list[ReasonCode], properties: Any = None) -> None:
        with self._changed:
            self._subacks[mid] = codes
            self._changed.notify_all()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode,
                    properties: Any = None) -> None:
        with self._changed:
            self._pubacks[mid] = rc
            self._changed.notify_all()

    def _await(self, predicate: Callable[[], bool], what: str) -> None:
        with self._changed:
            if not self._changed.wait_for(predicate, TIMEOUT_S):
                raise AssertionError(f"timed out after {TIMEOUT_S} s waiting for {what}")

    # the test's side
    def connect(self) -> ReasonCode | None:
        """The CONNACK's reason code, or None when the connection ended without one."""
        kwargs: dict[str, Any] = {}
        if self.protocol == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self._expiry
            kwargs = {"clean_start": self._clean, "properties": props}
        try:
            self.client.connect("127.0.0.1", self.port, 30, **kwargs)
        except OSError:  # ssl.SSLError included: the TLS handshake failed
            return None
        self.client.loop_start()
        self._answered.wait(TIMEOUT_S)
        return self.connack

    def subscribe(self, *topics: str) -> list[ReasonCode]:
        """Subscribe at QoS 1; the SUBACK's reason codes."""
        result, mid = self.client.subscribe([(t, 1) for t in topics])
        assert result == mqtt.MQTT_ERR_SUCCESS and mid is not None, result
        self._await(lambda: mid in self._subacks, f"SUBACK of {topics}")
        return self._subacks.pop(mid)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> ReasonCode | None:
        """Publish at QoS 1 and wait for the answer: the PUBACK's reason code, or None when the
        broker closed the connection instead."""
        mid = self.client.publish(topic, payload, qos=1, retain=retain).mid
        self._await(lambda: mid in self._pubacks or self.closed, f"PUBACK on {topic}")
        return self._pubacks.pop(mid, None)

    def send(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish at QoS 1 and require success."""
        rc = self.publish(topic, payload, retain=retain)
        assert rc is not None and not rc.is_failure, (topic, rc)

    def wait_for(self, payload: bytes) -> None:
        self._await(lambda: any(p == payload for _, p in self.messages), f"{payload!r}")

    def payloads(self) -> list[bytes]:
        with self._changed:
            return [p for _, p in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        # paho closes its socket pair (loopback TCP, for waking its loop) only in Client.__del__;
        # a client in a reference cycle (its callbacks are this Peer's methods) is collected
        # later, its sockets possibly first: a ResourceWarning, an error under this suite's
        # filterwarnings, in whichever test the collection falls.
        self.client._reset_sockets()  # no public way in paho 2.2
