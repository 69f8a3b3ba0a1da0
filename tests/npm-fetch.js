// npm-fetch.js DIR NAME@VERSION=INTEGRITY ...: fetch packages from the npm
// registry into DIR/node_modules/NAME, each checked against its pinned
// sha512 integrity (as package-lock.json records it), with node's own https
// and the system's tar, so the tests need Debian's nodejs but not npm.
// A package already unpacked with the same integrity is left as it is.
// Certificates: node's own and the system's bundle (SSL_CERT_FILE, else
// /etc/ssl/certs/ca-certificates.crt), so a machine whose TLS goes through
// a proxy with a locally installed CA works without NODE_EXTRA_CA_CERTS.
// Exits 0 when every package is there; 3 when the registry cannot be
// reached (network, TLS); 1 for anything else, an integrity mismatch first.
'use strict';
const fs = require('fs');
const https = require('https');
const path = require('path');
const crypto = require('crypto');
const tls = require('tls');
const { execFileSync } = require('child_process');

const ca = [...tls.rootCertificates];
for (const f of [process.env.SSL_CERT_FILE, '/etc/ssl/certs/ca-certificates.crt']) {
	try {
		if (f)
			ca.push(fs.readFileSync(f, 'utf8'));
	} catch (e) { /* not there */ }
}

class Unreachable extends Error {}

function get(url, redirects) {
	return new Promise((resolve, reject) => {
		https.get(url, { timeout: 60000, ca }, (res) => {
			if (res.statusCode >= 300 && res.statusCode < 400 && res.headers.location && redirects > 0) {
				res.resume();
				resolve(get(new URL(res.headers.location, url).toString(), redirects - 1));
				return;
			}
			if (res.statusCode !== 200) {
				res.resume();
				reject(new Unreachable(`${url}: HTTP ${res.statusCode}`));
				return;
			}
			const parts = [];
			res.on('data', (d) => parts.push(d));
			res.on('end', () => resolve(Buffer.concat(parts)));
			res.on('error', reject);
		}).on('error', (e) => reject(new Unreachable(`${url}: ${e.message}`)))
			.on('timeout', function () { this.destroy(new Error(`${url}: timed out`)); });
	});
}

async function fetchOne(dir, spec) {
	const m = /^(@?[^@]+)@([^=]+)=(sha512-.+)$/.exec(spec);
	if (!m)
		throw new Error(`bad package spec '${spec}' (NAME@VERSION=sha512-...)`);
	const [, name, version, integrity] = m;
	const dest = path.join(dir, 'node_modules', name);
	const stamp = path.join(dest, '.masq-integrity');
	if (fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8') === integrity)
		return;
	const base = name.split('/').pop();
	const url = `https://registry.npmjs.org/${name}/-/${base}-${version}.tgz`;
	const tgz = await get(url, 5);
	const got = 'sha512-' + crypto.createHash('sha512').update(tgz).digest('base64');
	if (got !== integrity)
		throw new Error(`${name}@${version}: integrity ${got}, expected ${integrity}`);
	fs.rmSync(dest, { recursive: true, force: true });
	fs.mkdirSync(dest, { recursive: true });
	execFileSync('tar', ['xzf', '-', '-C', dest, '--strip-components=1', '--no-same-owner'], { input: tgz });
	fs.writeFileSync(stamp, integrity);
	process.stderr.write(`npm-fetch: ${name}@${version} (${tgz.length} bytes)\n`);
}

(async () => {
	const [dir, ...specs] = process.argv.slice(2);
	try {
		for (const s of specs)
			await fetchOne(dir, s);
	} catch (e) {
		process.stderr.write(`npm-fetch: ${e.message}\n`);
		process.exit(e instanceof Unreachable ? 3 : 1);
	}
})();
