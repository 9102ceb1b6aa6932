"""Checks of tests/docs/validate.sh that need a little code (run with the virtualenv's Python).

  checks.py served BASE_URL DIR        the served documents equal the CLI's (DIR/openapi.json,
                                       DIR/asyncapi.json); /swagger.yaml equals /openapi.json
  checks.py page BASE_URL CACHE_DIR    /docs: its CSP allows exactly the assets it loads, and
                                       each asset's SRI hash matches the file in the npm package
  checks.py users BASE_URL             registers two users; prints TOKEN USER_ID PEER_ID
"""

import base64
import hashlib
import json
import re
import secrets
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

import yaml


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers, r.read()


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def served(base, directory):
    d = Path(directory)
    for path, cli_file in [("/openapi.json", "openapi.json"), ("/asyncapi.json", "asyncapi.json")]:
        status, headers, body = get(base + path)
        if status != 200 or not headers["content-type"].startswith("application/json"):
            fail(f"{path}: {status} {headers['content-type']}")
        if json.loads(body) != json.loads((d / cli_file).read_text()):
            fail(f"{path} differs from `confab {cli_file.split('.')[0]}`")
    openapi = json.loads((d / "openapi.json").read_text())
    status, headers, body = get(base + "/swagger.yaml")
    if status != 200 or "yaml" not in headers["content-type"]:
        fail(f"/swagger.yaml: {status} {headers['content-type']}")
    # PyYAML reads YAML 1.1: an unquoted yes/no/on/off would come back as a boolean.
    if yaml.safe_load(body) != openapi:
        fail("/swagger.yaml does not load to the same data as /openapi.json")
    print("served documents: OK (equal to the CLI's; YAML equal to JSON)")


CDN = re.compile(r"^https://cdn\.jsdelivr\.net/npm/((?:@[^/]+/)?[^/@]+)@([^/]+)/(.+)$")


def npm_file(cache, package, version, path):
    """A file of a published npm package, from `npm pack` (cached)."""
    root = Path(cache) / f"{package.replace('/', '_')}-{version}"
    if not (root / "package").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            ["npm", "pack", f"{package}@{version}", "--silent", "--pack-destination", str(root)],
            check=True, capture_output=True, text=True,
        ).stdout.strip().splitlines()[-1]
        with tarfile.open(root / out) as t:
            t.extractall(root, filter="data")
    return (root / "package" / path).read_bytes()


def page(base, cache):
    status, headers, body = get(base + "/docs")
    html = body.decode()
    if status != 200 or not headers["content-type"].startswith("text/html"):
        fail(f"/docs: {status} {headers['content-type']}")
    csp = headers["content-security-policy"]
    policy = {d.split()[0]: d.split()[1:] for d in (p.strip() for p in csp.split(";")) if d}
    if policy.get("default-src") != ["'none'"]:
        fail(f"/docs CSP must keep default-src 'none': {csp}")
    for word in ("'unsafe-eval'", "*", "http:", "https:"):
        if any(word in v for v in policy.values()):
            fail(f"/docs CSP allows {word}: {csp}")
    assets = re.findall(r'(?:src|href)="([^"]+)" integrity="(sha384-[^"]+)" crossorigin="anonymous"', html)
    loads = re.findall(r'<(?:script|link)[^>]*(?:src|href)="([^"]+)"', html)
    if not assets or len(assets) != len(loads):
        fail(f"/docs loads something without an integrity hash: {loads}")
    for url, integrity in assets:
        m = CDN.match(url)
        if not m:
            fail(f"/docs asset not on the pinned CDN: {url}")
        package, version, path = m.groups()
        if not re.fullmatch(r"\d+\.\d+\.\d+", version):
            fail(f"{url}: the version must be pinned exactly")
        origin = "https://cdn.jsdelivr.net"
        directive = "style-src" if url.endswith(".css") else "script-src"
        if origin not in policy.get(directive, []):
            fail(f"{directive} does not allow {origin}: {csp}")
        digest = hashlib.sha384(npm_file(cache, package, version, path)).digest()
        actual = "sha384-" + base64.b64encode(digest).decode()
        if actual != integrity:
            fail(f"{url}: integrity {integrity} but the npm package's file is {actual}")
    # Inline scripts must be allowed by their hash, never by 'unsafe-inline'.
    for script in re.findall(r"<script>(.*?)</script>", html, re.S):
        h = "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        if h not in policy.get("script-src", []):
            fail(f"inline script not allowed by hash {h}: {csp}")
    if "'unsafe-inline'" in policy.get("script-src", []):
        fail(f"script-src allows 'unsafe-inline': {csp}")
    print(f"/docs: OK ({len(assets)} pinned assets, SRI hashes match npm; CSP {csp})")


def users(base):
    out = []
    for _ in range(2):
        body = json.dumps({"username": "st" + secrets.token_hex(6), "password": "validate-" + secrets.token_hex(8)})
        req = urllib.request.Request(
            base + "/auth/register", data=body.encode(), headers={"content-type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            out.append(json.loads(r.read()))
    print(out[0]["token"], out[0]["user"]["id"], out[1]["user"]["id"])


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"served": served, "page": page, "users": users}[cmd](*args)
