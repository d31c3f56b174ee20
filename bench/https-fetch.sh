#!/usr/bin/env bash
# Network fetch: `rkt fetch https://…` of a ~100 MB signed ACI (download,
# signature check, import into a fresh store) against `curl -o` of the image
# and its signature plus `sha512sum` of the image, in one hyperfine run,
# from a Node https server on 127.0.0.1 with a throw-away CA. Prints the
# ratio of medians.
# Usage: bench/https-fetch.sh [RUNS]   (as root, after scripts/setup.sh and npm run build)
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
runs=${1:-5}
work=$(mktemp -d /var/tmp/rkt-bench-https.XXXXXX)
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null
  GNUPGHOME="$work/gpg" gpgconf --kill gpg-agent 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# ~100 MB in 100 files of random bytes: incompressible, like a real image's binaries
mkdir -p "$work/aci/rootfs" "$work/www" "$work/gpg"
chmod 700 "$work/gpg"
for i in $(seq 1 100); do head -c 1000000 /dev/urandom > "$work/aci/rootfs/f$i"; done
echo '{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/bench-https","labels":[{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}]}' > "$work/aci/manifest"
tar --numeric-owner -C "$work/aci" -cf "$work/www/big.aci" manifest rootfs
rm -rf "$work/aci"
gpg=(gpg --homedir "$work/gpg" --batch --no-tty --pinentry-mode loopback --passphrase '')
"${gpg[@]}" --quick-gen-key 'Bench <bench@example.com>' ed25519 sign never 2>/dev/null
"${gpg[@]}" --armor --export 'Bench <bench@example.com>' > "$work/key.asc"
"${gpg[@]}" --armor --detach-sign --output "$work/www/big.aci.asc" "$work/www/big.aci"
echo "image: $(stat -c %s "$work/www/big.aci") bytes" >&2

# the CA and the server certificate for 127.0.0.1
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$work/ca.key" -out "$work/ca.pem" -days 1 -subj '/CN=bench CA' 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$work/srv.key" -out "$work/srv.csr" -subj '/CN=127.0.0.1' 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > "$work/ext.cnf"
openssl x509 -req -in "$work/srv.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial -out "$work/srv.pem" -days 1 -extfile "$work/ext.cnf" 2>/dev/null

node -e '
const [dir, key, cert, portFile] = process.argv.slice(1);
const fs = require("fs"), path = require("path");
require("https").createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(cert) }, (req, res) => {
  const file = path.join(dir, path.basename(req.url));
  fs.stat(file, (err, st) => {
    if (err) return res.writeHead(404).end();
    res.writeHead(200, { "content-length": st.size });
    fs.createReadStream(file).pipe(res);
  });
}).listen(0, "127.0.0.1", function () { fs.writeFileSync(portFile, String(this.address().port)); });
' "$work/www" "$work/srv.key" "$work/srv.pem" "$work/port" &
server=$!
for _ in $(seq 1 50); do [ -s "$work/port" ] && break; sleep 0.1; done
url="https://127.0.0.1:$(cat "$work/port")/big.aci"

rkt="$PWD/bin/rkt --dir=$work/data --local-config=$work/etc --system-config=$work/lib --user-config=$work/user"
$rkt trust --prefix=example.com/bench-https --skip-fingerprint-review "$work/key.asc" 2>/dev/null
export NODE_EXTRA_CA_CERTS="$work/ca.pem"
hyperfine --runs "$runs" --warmup 1 --export-json "$work/result.json" \
  --prepare "rm -rf $work/data $work/dl; mkdir -p $work/dl; sync" \
  -n rkt "$rkt fetch $url >/dev/null 2>&1" \
  -n 'curl+sha512sum' "curl -sfS --cacert $work/ca.pem -o $work/dl/big.aci $url && curl -sfS --cacert $work/ca.pem -o $work/dl/big.aci.asc $url.asc && sha512sum $work/dl/big.aci >/dev/null" >&2
node bench/ratio.mjs "$work/result.json"
