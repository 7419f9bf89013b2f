// A real OpenID provider for sidecar's end-to-end tests: the npm package `oidc-provider` on 127.0.0.1.
//
// Usage: node provider.mjs '<json config>'   (or the JSON in the environment variable PROVIDER_CONFIG)
//
// Config (every key optional):
//   port                 TCP port on 127.0.0.1; 0 or absent picks a free one (no race: the issuer
//                        is built after the socket is bound).
//   accessTokenTtl       access token lifetime in seconds (default 3600). A client may override it
//                        with its own `access_token_ttl` metadata (also at dynamic registration).
//   clients              static clients, oidc-provider client metadata (client_id, client_secret,
//                        redirect_uris, post_logout_redirect_uris, token_endpoint_auth_method,
//                        grant_types, backchannel_logout_uri, access_token_ttl, ...). Defaults:
//                        grant_types [authorization_code, refresh_token], response_types [code],
//                        client_secret_basic.
//
// Behaviour the tests rely on:
//   - devInteractions: a login form (any login and password) then a consent form.
//   - Accounts: sub = login, email = `<login>@example.com` (verified), name, preferred_username,
//     groups = ["staff"], plus "admins" when the login starts with "admin", plus N groups
//     "group-0001".."group-N" when the login has the form `big<N>-...` (for large sessions).
//   - Scopes openid, email, profile, groups, offline_access; ID tokens carry the scope's claims
//     (conformIdTokenClaims: false).
//   - PKCE S256 required for every client; a refresh token for every client allowed the
//     refresh_token grant, rotated on every use (reuse gives invalid_grant).
//   - RP-initiated logout, back-channel logout, revocation and open dynamic client registration
//     (POST /reg) are on. State lives in memory only.
//
// Prints one line `ready {"issuer": ..., "port": ...}` on stdout once it is listening. SIGTERM,
// SIGINT or the death of its parent process closes it.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import process from 'node:process';

import Provider from 'oidc-provider';

const config = JSON.parse(process.argv[2] ?? process.env.PROVIDER_CONFIG ?? '{}');
const defaultAccessTokenTtl = Number(config.accessTokenTtl ?? 3600);

function accessTokenTtl(client) {
  const own = client?.access_token_ttl;
  return Number.isInteger(own) && own > 0 ? own : defaultAccessTokenTtl;
}

function groupsFor(login) {
  const groups = ['staff'];
  if (login.startsWith('admin')) {
    groups.push('admins');
  }
  const big = /^big(\d+)-/.exec(login);
  if (big) {
    const count = Math.min(Number(big[1]), 5000);
    for (let i = 1; i <= count; i += 1) {
      groups.push(`group-${String(i).padStart(4, '0')}`);
    }
  }
  return groups;
}

function page(title, body) {
  // No external resources: the browser in the tests has no internet.
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${title}</title></head>`
    + `<body>${body}</body></html>`;
}

function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({
  format: 'jwk',
});

const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(config.port ?? 0), '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: config.clients ?? [],
  clientDefaults: {
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
  },
  extraClientMetadata: {
    properties: ['access_token_ttl'],
    validator(_ctx, key, value) {
      if (key === 'access_token_ttl' && value !== undefined
        && !(Number.isInteger(value) && value > 0)) {
        throw new Error('access_token_ttl must be a positive integer');
      }
    },
  },
  jwks: { keys: [{ ...signingKey, kid: 'e2e-rsa-1', use: 'sig', alg: 'RS256' }] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  conformIdTokenClaims: false,
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: `${id}@example.com`,
          email_verified: true,
          name: `User ${id}`,
          preferred_username: id,
          groups: groupsFor(id),
        };
      },
    };
  },
  pkce: { required: () => true },
  async issueRefreshToken(_ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  rotateRefreshToken: true,
  ttl: {
    AccessToken: (_ctx, _token, client) => accessTokenTtl(client),
    AuthorizationCode: 60,
    ClientCredentials: 600,
    DeviceCode: 600,
    BackchannelAuthenticationRequest: 600,
    PreAuthorizedCode: 600,
    IdToken: 3600,
    RefreshToken: 24 * 3600,
    Interaction: 3600,
    Session: 24 * 3600,
    Grant: 24 * 3600,
  },
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true },
    revocation: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.body = page('Logout Request', `<h1>Do you want to sign-out from ${escapeHtml(ctx.host)}?</h1>
${form}
<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = page('Signed out', '<h1>Signed out</h1>');
      },
    },
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    const rows = Object.entries(out)
      .map(([key, value]) => `<p><strong>${escapeHtml(key)}</strong>: ${escapeHtml(value)}</p>`)
      .join('');
    ctx.body = page('oops! something went wrong', `<h1>oops! something went wrong</h1>${rows}`);
  },
});

const handler = provider.callback();
server.on('request', handler);

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// A test run that is killed cannot stop us: exit when our parent goes away (we get re-parented).
const parentPid = process.ppid;
setInterval(() => {
  if (process.ppid !== parentPid) {
    stop();
  }
}, 1000).unref();

process.stdout.write(`ready ${JSON.stringify({ issuer, port })}\n`);
