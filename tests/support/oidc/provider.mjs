// One organisation's OpenID provider for the tests: oidc-provider, configured from
// the JSON file named on the command line:
//   {issuer, port, clients: [...], users: {login: {password, claims}}, keys: [JWK],
//    accessTokenTtl, idTokenTtl}
// Users sign in on a login form that checks their password; Jisr is a first-party
// client, so consent is granted without a second page. Access tokens for the
// resource "urn:jisr" are JWTs (what Jisr verifies for API callers).
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const RESOURCE = 'urn:jisr';

function page(title, body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title></head>`
    + `<body><h1>${title}</h1>${body}</body></html>`;
}

function loginForm(uid, error) {
  return page('Sign in', `${error ? `<p id="login-error">${error}</p>` : ''}
    <form method="post" action="/interaction/${uid}/login">
      <label>User <input id="login" name="login" autocomplete="username" required></label>
      <label>Password <input id="password" name="password" type="password" required></label>
      <button id="sign-in" type="submit">Sign in</button>
    </form>`);
}

async function findAccount(ctx, id) {
  const user = config.users[id];
  if (!user) return undefined;
  return { accountId: id, claims: async () => ({ sub: id, ...user.claims }) };
}

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: { keys: config.keys },
  findAccount,
  scopes: ['openid', 'profile', 'offline_access', 'jisr'],
  claims: {
    openid: ['sub'],
    profile: ['name'],
    jisr: ['jisr_role', 'groups', 'facility', 'specialties', 'organisation'],
  },
  conformIdTokenClaims: false, // Jisr reads the mapped claims from the ID token
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: true },
    revocation: { enabled: true }, // an administrator ending a user's grant
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      getResourceServerInfo: () => ({
        scope: 'jisr', audience: 'jisr', accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } },
        accessTokenTTL: config.accessTokenTtl || 600,
      }),
    },
  },
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: false,
  // API callers' access tokens carry the user's Jisr claims, as ID tokens do.
  extraTokenClaims: async (ctx, token) => (token.kind === 'AccessToken'
    ? config.users[token.accountId]?.claims : undefined),
  ttl: { IdToken: config.idTokenTtl || 600, AccessToken: config.accessTokenTtl || 600 },
  cookies: { keys: ['jisr-test-provider-cookie-key'] },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
});
provider.proxy = false;

// The login form, checked against the users' passwords.
provider.use(async (ctx, next) => {
  const match = ctx.path.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!match) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (details.prompt.name === 'consent') {
    const grant = new provider.Grant({ accountId: details.session.accountId,
      clientId: details.params.client_id });
    grant.addOIDCScope(details.params.scope);
    grant.addResourceScope(RESOURCE, 'jisr');
    const grantId = await grant.save();
    return provider.interactionFinished(ctx.req, ctx.res, { consent: { grantId } },
      { mergeWithLastSubmission: true });
  }
  if (ctx.method === 'GET') {
    ctx.type = 'html';
    ctx.body = loginForm(match[1]);
    return undefined;
  }
  const form = new URLSearchParams(await new Promise((resolve) => {
    let data = '';
    ctx.req.on('data', (chunk) => { data += chunk; });
    ctx.req.on('end', () => resolve(data));
  }));
  const user = config.users[form.get('login')];
  if (!user || user.password !== form.get('password')) {
    ctx.type = 'html';
    ctx.body = loginForm(match[1], 'Wrong user or password');
    return undefined;
  }
  return provider.interactionFinished(ctx.req, ctx.res, { login: { accountId: form.get('login') } },
    { mergeWithLastSubmission: false });
});

for (const event of ['server_error', 'grant.error', 'authorization.error']) {
  provider.on(event, (ctx, err) => console.error(event, err && (err.stack || err)));
}

provider.listen(config.port, '127.0.0.1', () => {
  console.log(JSON.stringify({ event: 'provider.started', issuer: config.issuer }));
});
