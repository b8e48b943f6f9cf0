// A real OpenID provider (panva's oidc-provider) for the integration tests.
//
// Environment:
//   PORT      loopback port to listen on (0: any free port)
//   KEYS_DIR  where signing keys are kept across restarts
//   KEYS      comma-separated key names, signing key first; a name without a
//             file in KEYS_DIR gets a new RSA key (e.g. "k1", then "k2,k1", then "k2")
//   MAX_AGE   optional Cache-Control max-age for the JWKS, in seconds
//
// Prints "listening <issuer URL>" once it accepts connections.
//
// Besides the provider's own routes:
//   GET /test/stats          {"jwks": <JWKS fetches>, "discovery": <discovery fetches>}
//   GET /test/id-token?sub=  an ID token for the test client, signed like any other
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';

import Provider from 'oidc-provider';

const port = Number(process.env.PORT ?? 0);
const keysDir = process.env.KEYS_DIR;
const keyNames = (process.env.KEYS ?? 'k1').split(',').filter(Boolean);
const maxAge = process.env.MAX_AGE;
if (!keysDir) throw new Error('KEYS_DIR is required');

function signingKey(name) {
  const path = join(keysDir, `${name}.json`);
  if (existsSync(path)) return JSON.parse(readFileSync(path, 'utf8'));
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = {
    ...privateKey.export({ format: 'jwk' }),
    kid: `${name}-${randomBytes(4).toString('hex')}`,
    use: 'sig',
    alg: 'RS256',
  };
  writeFileSync(path, JSON.stringify(jwk));
  return jwk;
}

const server = createServer();
await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  jwks: { keys: keyNames.map(signingKey) },
  clients: [
    {
      client_id: 'ws-client',
      client_secret: 'ws-client-secret-of-a-reasonable-length',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_post',
    },
  ],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:ws:api',
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => ({
        scope: 'ws',
        audience: resource,
        accessTokenTTL: 600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
});

const stats = { jwks: 0, discovery: 0 };
provider.use(async (ctx, next) => {
  if (ctx.path === '/test/stats') {
    ctx.body = stats;
    return;
  }
  if (ctx.path === '/test/id-token') {
    const client = await provider.Client.find('ws-client');
    const token = new provider.IdToken({ sub: ctx.query.sub ?? 'someone' }, { client });
    token.scope = 'openid';
    ctx.body = { id_token: await token.issue({ use: 'idtoken' }) };
    return;
  }
  if (ctx.path === '/jwks') stats.jwks += 1;
  if (ctx.path === '/.well-known/openid-configuration') stats.discovery += 1;
  await next();
  if (ctx.path === '/jwks' && maxAge) ctx.set('cache-control', `public, max-age=${maxAge}`);
});

server.on('request', provider.callback());
process.stdout.write(`listening ${issuer}\n`);
