"""Run the sample identity provider.

    python -m sandbox.idp --port 8200 --people var/sandbox/idp-people.json --data-dir var/sandbox/idp \\
        --client-id gatehouse --client-secret-file var/sandbox/idp-client-secret \\
        --redirect-uri http://127.0.0.1/oidc/callback/

The people file is JSON, one entry per person, read again at every sign-in (change someone's groups and their next
sign-in carries the new ones; a person added to the file can sign in after a restart)::

    {"dana": {"password": "…", "email": "dana@example.com", "name": "Dana Finance", "groups": ["finance-approvers"]}}

The data folder holds its SQLite file and the RS256 signing key, both made anew at each start. `--port 0` picks a
free port. Once it serves, exactly one line is printed: ``sandbox-idp listening on http://HOST:PORT issuer
http://HOST:PORT/o``; the issuer is what Gatehouse's GATEHOUSE_OIDC_ISSUER names. A redirect URI on 127.0.0.1 or
[::1] accepts any port (RFC 8252, 7.3), so one registration serves Gatehouse wherever it listens. SIGTERM and Ctrl-C
stop it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"sandbox-idp {self.command} {self.path.split('?')[0]} {args[1] if len(args) > 1 else ''}\n")


def _signing_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _seed(people_file: Path, client_id: str, client_secret: str, redirect_uris: list[str]) -> None:
    """The people of the file as accounts, and Gatehouse as a confidential client that skips the consent page."""
    from django.contrib.auth.models import User
    from oauth2_provider.models import Application

    for username, person in json.loads(people_file.read_text()).items():
        user, _ = User.objects.get_or_create(username=username)
        user.email = person.get("email", "")
        user.set_password(person["password"])
        user.save()
    Application.objects.update_or_create(
        client_id=client_id,
        defaults={
            "name": "Gatehouse",
            "client_secret": client_secret,
            "client_type": Application.CLIENT_CONFIDENTIAL,
            "authorization_grant_type": Application.GRANT_AUTHORIZATION_CODE,
            "redirect_uris": " ".join(redirect_uris),
            "algorithm": Application.RS256_ALGORITHM,
            "skip_authorization": True,
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.idp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--people", type=Path, required=True, help="the people file (JSON)")
    parser.add_argument("--data-dir", type=Path, required=True, help="its SQLite file and signing key (made anew)")
    parser.add_argument("--client-id", default="gatehouse")
    parser.add_argument("--client-secret-file", type=Path, required=True, help="Gatehouse's client secret")
    parser.add_argument("--redirect-uri", action="append", default=[], help="Gatehouse's callback (repeatable)")
    args = parser.parse_args(argv)

    server = make_server(args.host, args.port, lambda environ, start: [], _Server, _QuietHandler)
    host = f"[{args.host}]" if ":" in args.host else args.host
    base = f"http://{host}:{server.server_port}"
    args.data_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("idp.sqlite3", "idp.sqlite3-journal"):
        (args.data_dir / stale).unlink(missing_ok=True)
    key_file = args.data_dir / "signing-key.pem"
    key_file.write_text(_signing_key())
    key_file.chmod(0o600)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "sandbox.idp.settings",
            "IDP_DATA_DIR": str(args.data_dir.resolve()),
            "IDP_ISSUER": f"{base}/o",
            "IDP_PEOPLE": str(args.people.resolve()),
        }
    )

    import django
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application

    django.setup()
    call_command("migrate", interactive=False, verbosity=0)
    secret = args.client_secret_file.read_text().strip()
    _seed(args.people, args.client_id, secret, args.redirect_uri or ["http://127.0.0.1/oidc/callback/"])
    server.set_app(get_wsgi_application())

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"sandbox-idp listening on {base} issuer {base}/o", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
