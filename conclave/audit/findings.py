"""Findings of ``conclave audit`` and the catalogue of rules that produce them.

Each rule has an id, a severity, a title, why it matters and how to fix it;
docs/audit-rules.md lists the same catalogue (a test keeps them in step).
A :class:`Finding` is one occurrence: the rule, what was found, and where.
The audit fails (exit status 1) when any finding is high or critical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "low", "medium", "high", "critical")
FAILING: frozenset[Severity] = frozenset({"high", "critical"})


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    title: str
    why: str
    fix: str


_RULES = (
    Rule(
        "TOPOLOGY-INVALID",
        "high",
        "The topology fails `conclave topology check`",
        "A topology with errors cannot be served, published or trusted to say what runs where.",
        "Run `conclave topology check FILE` and correct each problem at the path it names.",
    ),
    Rule(
        "REQUIREMENTS-MISSING",
        "low",
        "No [requirements] section",
        "Without the stated requirements the audit cannot tell which roles and features are "
        "needed, so it cannot flag those that are not.",
        "Add [requirements] (users, remote_access, federation, high_availability, "
        "compliance_archiving), or let `conclave topology plan` write it.",
    ),
    Rule(
        "ROLE-UNUSED",
        "medium",
        "A role is deployed but nothing uses it",
        "Every role that runs is attack surface and upkeep; an unused one only adds risk.",
        "Remove the role from the host (and the host if nothing is left), or turn on the "
        "policy that needs it.",
    ),
    Rule(
        "FEATURE-UNNEEDED",
        "medium",
        "A feature is on that the stated requirements do not need",
        "Each feature that faces outward (remote access, federation, public IM) widens what an "
        "attacker can reach; the requirements say it is not wanted.",
        "Turn the feature off in [policies], or correct [requirements] if it is needed.",
    ),
    Rule(
        "TRANSPORT-PLAIN",
        "high",
        "Plain-text SIP (UDP or TCP) is on",
        "Plain SIP exposes messages, presence and digest exchanges to anyone on the path, and "
        "UDP sources are trivially spoofed.",
        'Use TLS only: transports = ["tls"] in the pool (or [transports] tcp/udp = false); '
        'gateways: transport = "tls".',
    ),
    Rule(
        "FEDERATION-OPEN",
        "high",
        "Federation is open to every domain",
        "Any domain on the internet can send messages and presence requests to every user: "
        "spam, phishing and reconnaissance.",
        "Set policies.federation.open = false and list partners in policies.federation.allow.",
    ),
    Rule(
        "FEDERATION-DISCOVERY",
        "high",
        "Partner discovery is on",
        "Discovery federates with any domain that publishes a DNS SRV record, which amounts "
        "to open federation.",
        "Set policies.federation.partner_discovery = false and use the allow-list.",
    ),
    Rule(
        "FEDERATION-PARTNER-NO-CA",
        "medium",
        "A federated partner is trusted by any public CA",
        "A partner listed without its own CA bundle is recognised by any certificate a public "
        "CA issued for its domain; one mis-issued certificate speaks for the partner.",
        "Give the partner's CA certificates in policies.federation.partners[].ca.",
    ),
    Rule(
        "FEDERATION-PRIVATE-ADDRESSES",
        "high",
        "Partners' DNS may point the edge at private addresses",
        "With policies.federation.private_addresses on, a partner (or whoever controls its DNS) "
        "can make the edge connect into the perimeter or internal networks, or to itself.",
        "Set policies.federation.private_addresses = false (it is for a lab on loopback).",
    ),
    Rule(
        "EDGE-INTERNAL-EXPOSED",
        "high",
        "An edge's internal side listens where the internet reaches it",
        "The internal side (mutual TLS from the pool) listens on the internet-facing address "
        "or on every address: the only layer left between the internet and the pool is a "
        "certificate check.",
        "Bind [edge] internal_bind to the edge's address on the perimeter's internal network "
        "(the topology's edge.internal.address).",
    ),
    Rule(
        "PUBLIC-IM",
        "medium",
        "Public IM connectivity is on",
        "Users can exchange messages with consumer IM services, outside the organisation's "
        "control and often outside its archiving.",
        "Set policies.external_access.public_im = false unless the business needs it.",
    ),
    Rule(
        "ANONYMOUS-ACCESS",
        "high",
        "Anonymous users are allowed",
        "People without an account can join from the internet; nothing ties what they do to "
        "an identity.",
        "Set policies.anonymous_users = false.",
    ),
    Rule(
        "FILE-TRANSFER-UNFILTERED",
        "medium",
        "File transfer is on without filtering",
        "Any file type, executables included, can be sent to users over IM.",
        'Set policies.file_transfer = "filtered" (safe types only) or "off".',
    ),
    Rule(
        "LOCKOUT-MISSING",
        "medium",
        "No lockout policy is stated",
        "Password guessing is limited only by the server's built-in defaults, and nothing "
        "shows they are below the directory's own lockout.",
        "Add [policies.lockout] with threshold, duration and directory_threshold.",
    ),
    Rule(
        "LOCKOUT-ABOVE-DIRECTORY",
        "high",
        "The lockout threshold is at or above the directory's",
        "Guessing through Conclave then locks the users' directory accounts before Conclave "
        "bans the source: an outsider can lock users out of everything.",
        "Set policies.lockout.threshold below policies.lockout.directory_threshold.",
    ),
    Rule(
        "LOCKOUT-WEAK",
        "high",
        "The lockout does not stop password guessing",
        "More than 100 failures a minute, or a ban shorter than a minute, lets an attacker "
        "try tens of thousands of passwords a day from one address.",
        "Use a threshold of at most 100 failures a minute and a ban of at least 1 minute "
        "(defaults: 10 and 10 minutes).",
    ),
    Rule(
        "TLS-WEAK",
        "high",
        "Weak TLS settings or certificate",
        "A short key, a SHA-1 or MD5 signature, or TLS older than 1.2 or without forward "
        "secrecy lets an attacker forge certificates or decrypt traffic.",
        "Issue a new certificate (EC P-256 or RSA 2048+ with SHA-256): `conclave certs renew` "
        "or `conclave topology provision`.",
    ),
    Rule(
        "CERT-EXPIRED",
        "critical",
        "A certificate has expired",
        "Clients and servers refuse the connection: the service is down for them.",
        "Renew it now: `conclave certs renew`, or `conclave topology provision` for a "
        "provisioned host; public certificates from their CA.",
    ),
    Rule(
        "CERT-EXPIRING",
        "high",
        "A certificate expires within 30 days",
        "When it expires, every connection to the host fails.",
        "Renew it before it expires (see CERT-EXPIRED).",
    ),
    Rule(
        "CERT-UNREADABLE",
        "high",
        "A certificate in use cannot be read",
        "The server cannot start TLS with it, and nothing about it can be checked.",
        "Point the setting at a PEM certificate file, or provision the host again.",
    ),
    Rule(
        "EDGE-CERT-UNTRUSTED",
        "high",
        "The edge's external certificate is self-signed or from the internal CA",
        "Remote users and partners do not trust the internal CA: they either fail to connect "
        "or are taught to accept any certificate, which invites interception.",
        "Get the external certificate from a public CA for the names "
        "`conclave topology publish` lists.",
    ),
    Rule(
        "EDGE-CERT-MISSING",
        "medium",
        "The edge's external interface names no certificate",
        "The certificate the internet sees cannot be checked (issuer, names, expiry).",
        "Set edge.external.certificate to the public certificate's PEM file.",
    ),
    Rule(
        "EDGE-EXTRA-PORTS",
        "high",
        "An edge exposes more than its documented ports",
        "The edge is the only host facing the internet; every extra port on it is reachable "
        "by anyone.",
        "Remove extra_ports and the admin interface from the edge; manage it from the "
        "internal side.",
    ),
    Rule(
        "POOL-UNPAIRED",
        "medium",
        "An Enterprise pool has no pool pairing",
        "If the pool's site fails, its users have no pool to fail over to (high when high "
        "availability is required).",
        "Pair it with a pool of the same edition in another site: pools.NAME.paired_with.",
    ),
    Rule(
        "POOL-SINGLE-FRONTEND",
        "medium",
        "High availability is required but a pool has one Front End",
        "Pool pairing only helps when a whole site fails; losing the one Front End of a pool "
        "stops every user homed there until someone fails the pool over by hand.",
        "Make the pool an Enterprise pool with at least two Front Ends (`conclave topology "
        "plan` sizes one spare), or drop requirements.high_availability if it is not needed.",
    ),
    Rule(
        "FEDERATION-NO-PARTNERS",
        "medium",
        "Federation is on but no partner is allowed",
        "It fails closed, yet the edge still opens its federation port to the internet for "
        "nobody: surface to attack with nothing gained.",
        "Add partner domains to policies.federation.allow, or set "
        "policies.federation.enabled = false.",
    ),
    Rule(
        "CERT-LIFETIME-LONG",
        "low",
        "A certificate is valid far longer than needed",
        "A long-lived certificate keeps a stolen key useful for years and lets old names, "
        "algorithms and mistakes live on; public CAs issue server certificates for at most "
        "398 days.",
        "Issue server certificates for at most 398 days (Conclave's CA issues 397 by default "
        "and renews them itself) and the CA for its default of 3650 days or less: "
        "`conclave certs renew`, `conclave certs ca init --replace`.",
    ),
    Rule(
        "LOGGING-COLLOCATED",
        "medium",
        "The logging controller shares its host with a role users reach",
        "The host that keeps every server's logs is where an incident is traced; a role on it "
        "that users or the internet reach is a way in, and whoever gets in can erase the "
        "evidence of every server.",
        "Give the logging-controller role a host of its own (`conclave topology plan` does).",
    ),
    Rule(
        "REMOTE-NO-DIRECTOR",
        "low",
        "Remote access to an Enterprise deployment without a Director",
        "Sign-ins from the internet reach the Front End pools directly: a flood of failed "
        "sign-ins lands on the servers that hold the users' state (Lync recommends the "
        "Director as defence in depth).",
        "Add a pool of hosts with the director role (`conclave topology plan` adds one).",
    ),
    Rule(
        "LOGGING-NO-CONTROLLER",
        "medium",
        "No logging controller",
        "Each server keeps its own logs only: an incident cannot be traced across servers, "
        "and a compromised server can erase its own tracks.",
        "Add a host with the logging-controller role (or set [logging] controller).",
    ),
    Rule(
        "ARCHIVING-OFF-COMPLIANCE",
        "high",
        "Compliance archiving is required but off",
        "Messages that must be kept are lost: a compliance breach.",
        'Set policies.archiving.mode = "all" (or what the rules require).',
    ),
    Rule(
        "ARCHIVING-NOT-CRITICAL",
        "medium",
        "Compliance archiving is not in critical mode",
        "When the archive cannot be written, messages are still delivered but not kept.",
        "Set policies.archiving.critical = true.",
    ),
    Rule(
        "ADMIN-EXPOSED",
        "high",
        "The admin interface is reachable beyond loopback",
        "Health and metrics reveal users, load and versions, and the interface has no "
        "authentication of its own.",
        "Bind it to 127.0.0.1 (or ::1) and reach it through SSH or a local agent.",
    ),
    Rule(
        "PASSWORD-POLICY",
        "high",
        "A user's password fails the password policy",
        "A guessable password is the easiest way in, and a leaked digest hash of a short "
        "password is cracked offline in minutes.",
        "Set a new password with `conclave user passwd NAME --dir DATA` (the policy is "
        "enforced there).",
    ),
    Rule(
        "PASSWORD-UNVERIFIABLE",
        "info",
        "Stored passwords can be tested only by guessing",
        "Only digest hashes are stored, so a password can be judged only by trying candidates "
        "against them; a weak password outside the candidates goes unnoticed.",
        "Nothing to fix; passwords set with `conclave user` meet the policy when set.",
    ),
    Rule(
        "USERS-UNREADABLE",
        "medium",
        "The users could not be read",
        "Their passwords were not checked.",
        "Make the database reachable (see the reason) and run the audit again.",
    ),
    Rule(
        "DIGEST-MD5",
        "low",
        "MD5 digest authentication is offered",
        "MD5 digest is weaker than SHA-256; it is offered for old clients that know nothing else.",
        'Remove "MD5" from [auth] algorithms once no client needs it.',
    ),
    Rule(
        "DATA-PERMISSIONS",
        "high",
        "Private data is readable by others",
        "The directory holds digest hashes (password equivalents, in conclave.db), private keys, "
        "every server's events (logs/events.db) and the configuration.",
        "chmod 700 the data directory and 600 every file the finding names.",
    ),
    Rule(
        "CONFIG-INVALID",
        "high",
        "The data directory's configuration is missing or invalid",
        "The server will not start, and nothing else in the directory can be judged.",
        "Fix the key the message names, or provision the host again.",
    ),
    Rule(
        "PORT-UNEXPECTED",
        "high",
        "A running server listens on a port its roles do not need",
        "A listener nobody planned is attack surface nobody watches.",
        "Find what opened it (the process named) and turn it off.",
    ),
)

RULES: dict[str, Rule] = {rule.id: rule for rule in _RULES}


@dataclass(frozen=True)
class Finding:
    """One problem the audit found."""

    rule: str
    found: str
    """what was found"""
    where: str
    """a topology path, a file, or host:port"""
    severity: Severity | None = None
    """overrides the rule's severity when the context makes it worse"""

    @property
    def level(self) -> Severity:
        return self.severity or RULES[self.rule].severity

    def to_json(self) -> dict[str, Any]:
        rule = RULES[self.rule]
        return {
            "id": rule.id,
            "severity": self.level,
            "title": rule.title,
            "found": self.found,
            "where": self.where,
            "why": rule.why,
            "fix": rule.fix,
        }


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Worst first, then by rule and place; duplicates removed."""
    unique = list(dict.fromkeys(findings))
    return sorted(unique, key=lambda f: (-SEVERITIES.index(f.level), f.rule, f.where))


def failing(findings: list[Finding]) -> bool:
    """True when any finding is high or critical."""
    return any(f.level in FAILING for f in findings)


def render_text(findings: list[Finding]) -> str:
    if not findings:
        return "No findings.\n"
    lines: list[str] = []
    for finding in findings:
        rule = RULES[finding.rule]
        lines.append(f"[{finding.level.upper()}] {rule.id}: {rule.title}")
        lines.append(f"  found: {finding.found}")
        lines.append(f"  where: {finding.where}")
        lines.append(f"  why:   {rule.why}")
        lines.append(f"  fix:   {rule.fix}")
    counts = {s: sum(1 for f in findings if f.level == s) for s in reversed(SEVERITIES)}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) + ".")
    return "\n".join(lines) + "\n"
