// jwt_sign.mjs — sign a JWT with the npm `jose` package (an implementation
// independent of Ward's), for the SSO tests (tests/e2e/test_sso.sh).
//
//   node jwt_sign.mjs ALG KEY CLAIMS-JSON [HEADER-JSON]
//
// ALG: HS256, HS512, RS256 or none. KEY: for HS*, a file whose bytes are the
// secret; for RS256, a PEM PKCS#8 private key file; for none, "-". The claims are
// signed as given (exp, iat, jti, email: nothing is added or checked here, so the
// tests can make expired or future tokens). HEADER-JSON adds protected header
// fields. Prints the compact token.
import { readFileSync } from 'node:fs';
import { SignJWT, UnsecuredJWT, importPKCS8 } from 'jose';

const [alg, keyArg, claimsJson, headerJson] = process.argv.slice(2);
if (!alg || !keyArg || !claimsJson) {
	console.error('usage: node jwt_sign.mjs ALG KEY CLAIMS-JSON [HEADER-JSON]');
	process.exit(2);
}
const claims = JSON.parse(claimsJson);
const extra = headerJson ? JSON.parse(headerJson) : {};
let token;
if (alg === 'none') {
	token = new UnsecuredJWT(claims).encode();
} else {
	const key = alg.startsWith('HS')
		? new Uint8Array(readFileSync(keyArg))
		: await importPKCS8(readFileSync(keyArg, 'utf8'), alg);
	token = await new SignJWT(claims).setProtectedHeader({ ...extra, alg }).sign(key);
}
process.stdout.write(token + '\n');
