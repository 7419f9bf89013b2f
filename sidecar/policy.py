"""Authorization decisions: may this identity reach this route? Plain data in, plain data out.

`decide(route, identity, authenticated_via=...)` returns a `Decision`: an outcome (`public`,
`allow`, `unauthenticated`, `forbidden`) and the named reasons behind it, which go to the access
log (users only ever see the outcome). Reason names follow Pomerium's: `public-route`,
`user-unauthenticated`, `user-authenticated`, `user-authorized`, `user-unauthorized`, and one per
policy rule, `policy:<name>:<rule>-<result>` (e.g. `policy:admins:groups_any-missing`).

A policy's semantics (the ones oauth2-proxy users know: allowed emails/domains AND allowed groups):
every rule kind the policy lists must be satisfied; kinds it leaves out are not checked.

- the email rule (`emails` and `email_domains` together): the user's email is one of `emails`, or
  its domain is one of `email_domains`. Only a verified email counts (`email_verified` true) unless
  the policy says `require_email_verified: false`. Emails compare case-insensitively (ASCII
  letters only, so a look-alike such as the Kelvin sign is never folded into `k`); the domain is
  what follows the last `@`, compared exactly: `example.com` never matches `evil-example.com` or
  `sub.example.com`; `.example.com` matches every subdomain (not `example.com` itself); `*`
  matches any domain (any verified email).
- `groups_any`: the user is in at least one of these groups. `groups_all`: in every one of them.
  Group names compare exactly (case-sensitively).
- each `claims` entry (`path: [values]`): the claim at `path` (a dotted path reaches nested
  claims, such as `realm_access.roles`) equals one of the values, or is a list holding one of
  them. Values compare by type and value: the YAML `3` matches the number 3, `"3"` the string.

So adding a rule kind to a policy can only narrow who it allows (more emails, domains or
`groups_any` names widen their own rule, as lists of alternatives do), and someone who satisfies
none of a policy's rules is always denied. Pure: no I/O, no aiohttp.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sidecar.oidc.tokens import claim_at
from sidecar.session.model import Identity

if TYPE_CHECKING:
    from sidecar.config.model import ClaimValue, PolicyConfig
    from sidecar.routing import Route

Outcome = Literal["allow", "public", "unauthenticated", "forbidden"]
AuthenticatedVia = Literal["session", "bearer", "basic"]

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """Lower-case ASCII letters only: `K` -> `k`, but the Kelvin sign `\u212a` stays itself."""
    return text.translate(_ASCII_LOWER)


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reasons: tuple[str, ...]

    @property
    def allowed(self) -> bool:
        """True when the request may go on to the backend."""
        return self.outcome in ("allow", "public")


def _same_value(claim: Any, wanted: ClaimValue) -> bool:
    return type(claim) is type(wanted) and claim == wanted


@dataclass(frozen=True)
class Policy:
    """A named policy compiled from its configuration (see the module docstring for semantics)."""

    name: str
    emails: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()
    domain_suffixes: tuple[str, ...] = ()
    any_domain: bool = False
    groups_any: frozenset[str] = frozenset()
    groups_all: frozenset[str] = frozenset()
    claims: tuple[tuple[str, tuple[ClaimValue, ...]], ...] = ()
    require_email_verified: bool = True

    @classmethod
    def from_config(cls, name: str, config: PolicyConfig) -> Policy:
        domains = [ascii_lower(domain) for domain in config.email_domains]
        return cls(
            name=name,
            emails=frozenset(ascii_lower(email) for email in config.emails),
            domains=frozenset(d for d in domains if d != "*" and not d.startswith(".")),
            domain_suffixes=tuple(d for d in domains if d.startswith(".")),
            any_domain="*" in domains,
            groups_any=frozenset(config.groups_any),
            groups_all=frozenset(config.groups_all),
            claims=tuple((path, tuple(values)) for path, values in config.claims.items()),
            require_email_verified=config.require_email_verified,
        )

    @property
    def has_email_rule(self) -> bool:
        return bool(self.emails or self.domains or self.domain_suffixes or self.any_domain)

    def _email_rule(self, identity: Identity) -> tuple[bool, str]:
        if not identity.email:
            return False, "email-missing"
        email = ascii_lower(identity.email)
        if email in self.emails:
            result = "email-ok"
        else:
            local, at, domain = email.rpartition("@")
            if not (at and local and domain):
                return False, "email-unauthorized"
            if not (
                self.any_domain
                or domain in self.domains
                or any(domain.endswith(suffix) for suffix in self.domain_suffixes)
            ):
                return False, "email-unauthorized"
            result = "email_domains-ok"
        if self.require_email_verified and identity.email_verified is not True:
            return False, "email-not-verified"
        return True, result

    @staticmethod
    def _claim_rule(
        claims: Mapping[str, Any], path: str, values: tuple[ClaimValue, ...]
    ) -> tuple[bool, str]:
        found = claim_at(claims, path)
        if found is None:
            return False, f"claim:{path}-missing"
        items = found if isinstance(found, list | tuple) else (found,)
        if any(_same_value(item, wanted) for item in items for wanted in values):
            return True, f"claim:{path}-ok"
        return False, f"claim:{path}-unauthorized"

    def check(self, identity: Identity) -> tuple[bool, tuple[str, ...]]:
        """Whether `identity` satisfies every rule; the reasons are the passed rules when it does,
        the failed ones when it does not, each as `policy:<name>:<rule>-<result>`."""
        results: list[tuple[bool, str]] = []
        if self.has_email_rule:
            results.append(self._email_rule(identity))
        groups = set(identity.groups)
        if self.groups_any:
            ok = not self.groups_any.isdisjoint(groups)
            results.append((ok, "groups_any-ok" if ok else "groups_any-missing"))
        if self.groups_all:
            ok = self.groups_all <= groups
            results.append((ok, "groups_all-ok" if ok else "groups_all-missing"))
        for path, values in self.claims:
            results.append(self._claim_rule(identity.claims, path, values))
        allowed = all(ok for ok, _ in results) and bool(results)
        prefix = f"policy:{self.name}:"
        reasons = tuple(prefix + reason for ok, reason in results if ok == allowed)
        return allowed, reasons


def decide(
    route: Route, identity: Identity | None, *, authenticated_via: AuthenticatedVia
) -> Decision:
    """The decision for a request that matched `route`, made by `identity` (None: nobody signed
    in). `authenticated_via` says how the identity was established; it is logged as `via:...`."""
    if route.access == "public":
        return Decision("public", ("public-route",))
    if identity is None:
        return Decision("unauthenticated", ("user-unauthenticated",))
    via = f"via:{authenticated_via}"
    policy = route.policy
    if policy is None:
        if route.access == "policy":  # cannot come from a validated config; fail closed anyway
            return Decision("forbidden", ("user-unauthorized", via, "policy-missing"))
        return Decision("allow", ("user-authenticated", via))
    allowed, reasons = policy.check(identity)
    if allowed:
        return Decision("allow", ("user-authorized", via, *reasons))
    return Decision("forbidden", ("user-unauthorized", via, *reasons))
