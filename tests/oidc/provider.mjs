// A real OpenID provider for the tests: the certified `oidc-provider` package (pinned in
// package-lock.json), on loopback, with the test clients and accounts of a JSON config file.
//
//   node provider.mjs CONFIG.json
//
// CONFIG: {"issuer": "http://127.0.0.1:PORT", "port": PORT, "clients": [client metadata...],
//          "jwks": {"keys": [private JWKs]}, "accounts": "/path/accounts.json"}
// accounts.json maps a login name to the claims of that account ({"email": ..., "email_verified":
// ..., "groups": [...]}); it is read again at every login, so a test can change what the provider
// says of an account (an e-mail, a group) between two logins. The login page is oidc-provider's own
// development page: any password is accepted, the login name is the account's `sub`. Consent is
// granted without asking, as a company's provider does for its own applications.
import { readFileSync } from "node:fs";

import Provider from "oidc-provider";

const config = JSON.parse(readFileSync(process.argv[2], "utf-8"));

function accountClaims(login) {
  const accounts = JSON.parse(readFileSync(config.accounts, "utf-8"));
  return Object.hasOwn(accounts, login) ? accounts[login] : null;
}

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: config.jwks,
  cookies: { keys: ["tests-only-cookie-key-0123456789"] },
  // What the scopes ask for goes into the ID token itself (as Keycloak does by default).
  conformIdTokenClaims: false,
  scopes: ["openid", "email", "profile", "groups", "offline_access"],
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["name"],
    groups: ["groups"],
  },
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  async findAccount(ctx, sub) {
    const claims = accountClaims(sub);
    if (claims === null) return undefined;
    return { accountId: sub, claims: async () => ({ ...claims, sub }) };
  },
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope(ctx.oidc.params.scope || "openid");
    await grant.save();
    return grant;
  },
});

provider.listen(config.port, "127.0.0.1", () => {
  console.log(`oidc-provider listening on ${config.issuer}`);
});
