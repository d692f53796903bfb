"""Credential shapes that are secret wherever they appear, grouped by family.

The yardstick is the default rule set of gitleaks (``config/gitleaks.toml``): every rule whose token
has a shape of its own (a vendor prefix, a fixed alphabet and length, a checksum-bearing layout) has
a rule here, written independently. gitleaks' *keyword* rules ("a 32-character value near the word
``heroku``") are covered by the key-aware assignment detection instead (``names.py``): a value under
a credential-looking name is masked whatever the vendor.

A rule runs only when one of its ``needles`` occurs in the text (``str`` search is ~100x faster
than a regex scan, and most files hold none of these shapes). Needles in lower case are looked up
in the lower-cased text. ``group`` names the capture group that is the secret (0: the whole match);
the rest of the match is context that stays readable.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass


class Family:
    """The rule families of docs/security.md (what a finding's ``family`` says)."""

    CLOUD = "cloud"
    VCS_CI = "vcs_ci"
    PACKAGE_REGISTRY = "package_registry"
    CHAT_WEBHOOK = "chat_webhook"
    PAYMENT = "payment"
    SAAS = "saas_api"
    JWT = "jwt"
    PRIVATE_KEY = "private_key"
    CONNECTION_STRING = "connection_string"
    CREDENTIAL_FILE = "credential_file"
    KUBERNETES = "kubernetes_secret"
    TERRAFORM = "terraform_state"
    KEY_VALUE = "key_value"


@dataclass(frozen=True)
class TokenRule:
    kind: str
    family: str
    pattern: re.Pattern[str]
    needles: tuple[str, ...]
    group: int = 0  # -1: whichever alternative's group matched
    check: Callable[[str], bool] | None = None  # extra test on the secret text
    # Every match starts where a needle occurs: the pattern is tried only there (``match`` at each
    # needle), instead of scanning the whole text.
    anchored: bool = True
    # Not anchored: a match starts at most ``back`` characters before a needle and ends on its line,
    # so only that window is searched; None: the needle only says the file is worth a full scan.
    back: int | None = None


def _has_digit(value: str) -> bool:
    return any(c.isdigit() for c in value)


def _basic_credentials(value: str) -> bool:
    """``Basic <b64>``: a credential when it has a digit or decodes to ``user:password``."""
    if _has_digit(value):
        return True
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded


def _base64_jwt(value: str) -> bool:
    """A base64-wrapped JWT (``ZXlK…``): decodes to ``eyJ….eyJ….``."""
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return False
    return re.match(rb"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.", decoded) is not None


# Boundaries: a token never continues an identifier or a longer base64 run on either side.
_L = r"(?<![A-Za-z0-9_])"
_LD = r"(?<![A-Za-z0-9_-])"
_R = r"(?![A-Za-z0-9_])"
_RD = r"(?![A-Za-z0-9_-])"


def _rule(kind: str, family: str, regex: str, needles: tuple[str, ...], group: int = 0,
          check: Callable[[str], bool] | None = None) -> TokenRule:
    return TokenRule(kind, family, re.compile(regex), needles, group, check, kind not in _UNANCHORED,
                     _UNANCHORED.get(kind))


# Rules whose needle sits inside the match (or only says the file is worth a full scan).
# Rules whose needle sits inside the match -> how far before the needle a match may start (the
# longest prefix the pattern allows), or None when the needle is context, not part of the match.
_UNANCHORED: dict[str, int | None] = {
    "aws_secret_key": 64, "azure_client_secret": 4, "azure_sas_signature": 1, "digitalocean_token": 3,
    "terraform_cloud_token": 15, "telegram_bot_token": 16, "mailchimp_key": 32, "sendinblue_key": 1,
    "stripe_key": 2, "maxmind_key": 37, "url_credentials": 31, "cli_password": 0,
    "twitter_bearer_token": 0,  # a run of A's holds the needle at every offset: one merged search
    "discord_bot_token": None, "gocardless_token": None,
}


C, V, P, H, M, S = (Family.CLOUD, Family.VCS_CI, Family.PACKAGE_REGISTRY, Family.CHAT_WEBHOOK,
                    Family.PAYMENT, Family.SAAS)

TOKEN_RULES: tuple[TokenRule, ...] = (
    # ---------------------------------------------------------------- cloud providers
    _rule("aws_access_key", C, r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])",
          ("AKIA", "ASIA", "ABIA", "ACCA", "A3T")),
    _rule("aws_secret_key", C,
          r"(?i:aws[_.-]?secret[_.-]?(?:access[_.-]?)?key|secret[_.-]?access[_.-]?key)[\"'`]?\]?[ \t]*"
          r"(?::=|=>|=|:)[ \t]*[\"'`]?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])", ("secret",), 1),
    _rule("aws_bedrock_key", C, _L + r"(?:ABSK[A-Za-z0-9+/]{100,270}={0,2}|bedrock-api-key-YmVkcm9jay5hbWF6b25hd3Mu"
          r"Y29t[A-Za-z0-9+/=%&._-]{10,2000})", ("ABSK", "bedrock-api-key-")),
    _rule("google_api_key", C, _LD + r"AIza[0-9A-Za-z_-]{35}" + _RD, ("AIza",)),
    _rule("azure_client_secret", C,
          r"(?<![A-Za-z0-9_~.-])[A-Za-z0-9_~.]{3}\dQ~[A-Za-z0-9_~.-]{31,34}(?![A-Za-z0-9_~.-])", ("Q~",)),
    _rule("azure_storage_key", C, r"(?i:AccountKey|SharedAccessKey|SharedSecretValue)[ \t]*=[ \t]*"
          r"([A-Za-z0-9+/]{20,}={0,2})", ("accountkey", "sharedaccesskey", "sharedsecretvalue"), 1),
    _rule("azure_sas_signature", C, r"[?&;](?i:sig)=([A-Za-z0-9%+/=]{20,})", ("sig=",), 1),
    _rule("alibaba_access_key", C, _L + r"LTAI[A-Za-z0-9]{12,20}" + _R, ("LTAI",)),
    _rule("digitalocean_token", C, _L + r"do[opr]_v1_[a-f0-9]{64}" + _R, ("_v1_",)),
    _rule("heroku_key", C, _L + r"HRKU-AA[0-9A-Za-z_-]{58}" + _RD, ("HRKU-",)),
    _rule("cloudflare_origin_ca_key", C, _L + r"v1\.0-[a-f0-9]{24}-[a-f0-9]{146}" + _R, ("v1.0-",)),
    _rule("databricks_token", C, _L + r"dapi[a-f0-9]{32}(?:-\d)?" + _R, ("dapi",)),
    _rule("terraform_cloud_token", C, _L + r"[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,70}" + _RD, ("atlasv1",)),
    _rule("vault_token", C, _L + r"hv[sbr]\.[A-Za-z0-9_-]{24,300}" + _RD, ("hvs.", "hvb.", "hvr.")),
    _rule("doppler_token", C, _L + r"dp\.(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9]{40,44}" + _R, ("dp.",)),
    _rule("pulumi_token", C, _L + r"pul-[a-f0-9]{40}" + _R, ("pul-",)),
    _rule("planetscale_token", C, _L + r"pscale_(?:tkn|pw|oauth)_[A-Za-z0-9_=.-]{32,64}" + _RD, ("pscale_",)),
    _rule("flyio_token", C, _L + r"(?:fo1_[A-Za-z0-9_-]{43}|fm[12][ar]?_[A-Za-z0-9+/]{100,}={0,3})",
          ("fo1_", "fm1", "fm2")),
    _rule("yandex_key", C, _L + r"(?:AQVN[A-Za-z0-9_-]{35,38}|t1\.[A-Za-z0-9_-]+={0,2}\.[A-Za-z0-9_-]{86})" + _RD,
          ("AQVN", "t1.")),
    _rule("openshift_token", C, _L + r"sha256~[A-Za-z0-9_-]{43}" + _RD, ("sha256~",)),
    _rule("clickhouse_key", C, _L + r"4b1d[A-Za-z0-9]{38}" + _R, ("4b1d",)),
    # ---------------------------------------------------------------- VCS and CI
    _rule("github_token", V, _L + r"(?:gh[pousr]_[A-Za-z0-9]{20,255}|github_pat_[A-Za-z0-9_]{22,255})" + _R,
          ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    _rule("gitlab_token", V, _L + r"(?:gl(?:pat|dt|rt|ptt|ft|imt|agent|soat|oas|cbt|ffct)-[A-Za-z0-9_.-]{20,300}|"
          r"GR1348941[A-Za-z0-9_-]{20})" + _RD,
          ("glpat-", "gldt-", "glrt-", "glptt-", "glft-", "glimt-", "glagent-", "glsoat-", "gloas-", "glcbt-",
           "glffct-", "GR1348941")),
    _rule("gitlab_session", V, r"_gitlab_session=([0-9a-z]{32})", ("_gitlab_session",), 1),
    _rule("atlassian_token", V, _L + r"AT(?:ATT|CTT|BB)[A-Za-z0-9_=.-]{24,300}" + _RD, ("ATATT", "ATCTT", "ATBB")),
    _rule("circleci_token", V, _L + r"CCIP[AR]T_[A-Za-z0-9]{22}_[a-f0-9]{40}" + _R, ("CCIP",)),
    _rule("sourcegraph_token", V, _L + r"sgp_(?:(?:[a-fA-F0-9]{16}|local)_)?[a-fA-F0-9]{40}" + _R, ("sgp_",)),
    _rule("sonar_token", V, _L + r"sq[upa]_[a-f0-9]{40}" + _R, ("squ_", "sqp_", "sqa_")),
    _rule("harness_token", V, _L + r"(?:pat|sat)\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9]{24}\.[A-Za-z0-9]{20}" + _R,
          ("pat.", "sat.")),
    _rule("octopus_key", V, _L + r"API-[A-Z0-9]{26}" + _R, ("API-",)),
    _rule("buildkite_token", V, _L + r"bkua_[a-f0-9]{40}" + _R, ("bkua_",)),
    _rule("infracost_token", V, _L + r"ico-[A-Za-z0-9]{32}" + _R, ("ico-",)),
    # ---------------------------------------------------------------- package registries
    _rule("npm_token", P, _L + r"npm_[A-Za-z0-9]{36}" + _R, ("npm_",)),
    _rule("pypi_token", P, _L + r"pypi-Ag(?:EIcHlwaS5vcmc|ENdGVzdC5weXBpLm9yZw)[A-Za-z0-9_-]{50,1000}", ("pypi-Ag",)),
    _rule("rubygems_token", P, _L + r"rubygems_[a-f0-9]{48}" + _R, ("rubygems_",)),
    _rule("nuget_key", P, _L + r"oy2[a-z0-9]{43}" + _R, ("oy2",)),
    _rule("nuget_config_password", P, r"<add\s+key=\"(?i:(?:ClearText)?Password)\"\s+value=\"([^\"]{4,})\"",
          ("<add",), 1),
    _rule("clojars_token", P, r"(?i)" + _L + r"CLOJARS_[a-z0-9]{60}" + _R, ("clojars_",)),
    _rule("artifactory_token", P, _L + r"(?:AKCp[A-Za-z0-9]{69}|cmVmdGtu[A-Za-z0-9]{56})" + _R, ("AKCp", "cmVmdGtu")),
    # ---------------------------------------------------------------- chat and webhooks
    _rule("slack_token", H, r"(?<![A-Za-z0-9])(?:xox[abposre]|xapp|xoxe\.xox[bp])-[A-Za-z0-9-]{10,250}",
          ("xox", "xapp-")),
    _rule("slack_webhook", H, r"hooks\.slack\.com/(?:services|workflows|triggers)/([A-Za-z0-9_/+]{8,300})",
          ("hooks.slack.com",), 1),
    _rule("discord_webhook", H, r"discord(?:app)?\.com/api/webhooks/\d{5,30}/([A-Za-z0-9_-]{30,100})",
          ("discord",), 1),
    _rule("discord_bot_token", H, _LD + r"[MNO][A-Za-z0-9_-]{23,25}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,38}" + _RD,
          ("discord",)),
    _rule("teams_webhook", H, r"(?:webhook\.office\.com/webhookb2|outlook\.office\.com/webhook)/"
          r"([A-Za-z0-9@/_-]{40,400})", ("webhook.office.com", "outlook.office.com"), 1),
    _rule("telegram_bot_token", H, r"(?<![A-Za-z0-9_:])\d{6,16}:A[A-Za-z0-9_-]{34}" + _RD, (":A",)),
    _rule("twilio_key", H, r"(?<![A-Za-z0-9])SK[0-9a-f]{32}(?![A-Za-z0-9])", ("SK",)),
    _rule("sendgrid_key", H, _L + r"SG\.[A-Za-z0-9_-]{20,24}\.[A-Za-z0-9_-]{39,50}" + _RD, ("SG.",)),
    _rule("mailgun_key", H, r"(?<![A-Za-z0-9_-])key-[a-f0-9]{32}" + _R, ("key-",)),
    _rule("mailchimp_key", H, r"(?<![A-Za-z0-9])[a-f0-9]{32}-us\d{1,2}(?![A-Za-z0-9])", ("-us",)),
    _rule("sendinblue_key", H, _L + r"x(?:keysib|smtpsib)-[a-f0-9]{64}-[A-Za-z0-9]{16}" + _R, ("keysib-", "smtpsib-")),
    # ---------------------------------------------------------------- payment
    _rule("stripe_key", M, _L + r"(?:sk|rk)_(?:live|test|prod)_[0-9A-Za-z]{10,247}(?![A-Za-z0-9])",
          ("_live_", "_test_", "_prod_")),
    _rule("stripe_webhook_secret", M, _L + r"whsec_[A-Za-z0-9]{24,64}" + _R, ("whsec_",)),
    _rule("square_token", M, _L + r"(?:EAAA|sq0atp-|sq0csp-)[A-Za-z0-9_-]{22,60}" + _RD, ("EAAA", "sq0")),
    _rule("shopify_token", M, _L + r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}" + _R, ("shp",)),
    _rule("braintree_token", M, r"access_token\$(?:production|sandbox)\$[a-z0-9]{16}\$[a-f0-9]{32}",
          ("access_token$",)),
    _rule("flutterwave_key", M, _L + r"FLWSECK(?:_TEST)?-[a-hA-H0-9]{12,32}(?:-X)?" + _R, ("FLWSECK",)),
    _rule("plaid_token", M, _L + r"access-(?:sandbox|development|production)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-"
          r"[0-9a-f]{4}-[0-9a-f]{12}" + _R, ("access-",)),
    _rule("razorpay_key", M, _L + r"rzp_(?:live|test)_[A-Za-z0-9]{14}" + _R, ("rzp_",)),
    _rule("duffel_token", M, _L + r"duffel_(?:test|live)_[A-Za-z0-9_=-]{43}" + _RD, ("duffel_",)),
    _rule("gocardless_token", M, _L + r"live_[A-Za-z0-9_=-]{40}" + _RD, ("gocardless",)),
    # ---------------------------------------------------------------- AI and SaaS APIs
    _rule("anthropic_key", S, _LD + r"sk-ant-(?:api|admin|sid)\d\d-[A-Za-z0-9_-]{20,300}" + _RD, ("sk-ant-",)),
    _rule("openai_key", S, _LD + r"(sk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,300})" + _RD, ("sk-",), 1,
          _has_digit),
    _rule("huggingface_token", S, _L + r"(?:hf|api_org)_[A-Za-z0-9]{34}" + _R, ("hf_", "api_org_")),
    _rule("perplexity_key", S, _L + r"pplx-[A-Za-z0-9]{48}" + _R, ("pplx-",)),
    _rule("groq_key", S, _L + r"gsk_[A-Za-z0-9]{52}" + _R, ("gsk_",)),
    _rule("replicate_token", S, _L + r"r8_[A-Za-z0-9]{37}" + _R, ("r8_",)),
    _rule("postman_key", S, _L + r"PMAK-[a-f0-9]{24}-[a-f0-9]{34}" + _R, ("PMAK-",)),
    _rule("linear_key", S, _L + r"lin_(?:api|oauth)_[A-Za-z0-9]{40}" + _R, ("lin_",)),
    _rule("notion_token", S, _L + r"(?:ntn_\d{11}[A-Za-z0-9]{35}|secret_[A-Za-z0-9]{43})" + _R, ("ntn_", "secret_")),
    _rule("newrelic_key", S, _L + r"NR(?:AK|JS|II)-[A-Za-z0-9-]{19,32}" + _R, ("NRAK-", "NRJS-", "NRII-")),
    _rule("sentry_token", S, _L + r"sntry[su]_[A-Za-z0-9+/=_]{40,400}", ("sntry",)),
    _rule("grafana_token", S, _L + r"(?:glc_[A-Za-z0-9+/]{32,400}={0,3}|glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}|"
          r"eyJrIjoi[A-Za-z0-9]{70,400}={0,3})", ("glc_", "glsa_", "eyJrIjoi")),
    _rule("age_secret_key", S, r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}", ("AGE-SECRET-KEY-1",)),
    _rule("onepassword_token", S, _L + r"(?:ops_eyJ[A-Za-z0-9+/]{250,}={0,3}|A3-[A-Z0-9]{6}-(?:[A-Z0-9]{11}|"
          r"[A-Z0-9]{6}-[A-Z0-9]{5})-[A-Z0-9]{5}-[A-Z0-9]{5}-[A-Z0-9]{5})", ("ops_eyJ", "A3-")),
    _rule("dynatrace_token", S, _L + r"dt0c01\.[A-Za-z0-9]{24}\.[A-Za-z0-9]{64}" + _R, ("dt0c01.",)),
    _rule("easypost_key", S, _L + r"EZ[AT]K[A-Za-z0-9]{54}" + _R, ("EZAK", "EZTK")),
    _rule("shippo_token", S, _L + r"shippo_(?:live|test)_[a-fA-F0-9]{40}" + _R, ("shippo_",)),
    _rule("typeform_token", S, _L + r"tfp_[A-Za-z0-9_.=-]{59}" + _RD, ("tfp_",)),
    _rule("prefect_token", S, _L + r"pnu_[A-Za-z0-9]{36}" + _R, ("pnu_",)),
    _rule("readme_token", S, _L + r"rdme_[a-z0-9]{70}" + _R, ("rdme_",)),
    _rule("scalingo_token", S, _L + r"tk-us-[A-Za-z0-9_-]{48}" + _RD, ("tk-us-",)),
    _rule("settlemint_token", S, _L + r"sm_[aps]at_[A-Za-z0-9]{16}" + _R, ("sm_",)),
    _rule("frameio_token", S, _L + r"fio-u-[A-Za-z0-9_=-]{64}" + _RD, ("fio-u-",)),
    _rule("maxmind_key", S, _L + r"[A-Za-z0-9]{6}_[A-Za-z0-9]{29}_mmk" + _R, ("_mmk",)),
    _rule("adobe_secret", S, _L + r"p8e-[A-Za-z0-9]{32}" + _R, ("p8e-",)),
    _rule("airtable_token", S, _L + r"pat[A-Za-z0-9]{14}\.[a-f0-9]{64}" + _R, ("pat",)),
    _rule("intra42_secret", S, _L + r"s-s4t2(?:ud|af)-[a-f0-9]{64}" + _R, ("s-s4t2",)),
    _rule("mapbox_secret_token", S, _L + r"sk\.eyJ[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}" + _RD, ("sk.eyJ",)),
    _rule("facebook_token", S, _L + r"EAA[MC][A-Za-z0-9]{100,}" + _R, ("EAAM", "EAAC")),
    _rule("twitter_bearer_token", S, r"A{22}[A-Za-z0-9%]{80,120}", ("AAAAAAAAAAAAAAAAAAAAAA",)),
    _rule("dropbox_token", S, _L + r"sl\.[A-Za-z0-9_=-]{130,140}" + _RD, ("sl.",)),
    # ---------------------------------------------------------------- JSON web tokens
    _rule("jwt", Family.JWT, _LD + r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*", ("eyJ",)),
    _rule("jwt", Family.JWT, _L + r"ZXlK[A-Za-z0-9+/]{40,}={0,2}", ("ZXlK",), 0, _base64_jwt),
    # ---------------------------------------------------------------- credentials in headers, commands, URLs
    _rule("auth_header", Family.CONNECTION_STRING, r"(?i)\b(?:bearer|token)[ \t]+([A-Za-z0-9._~+/=-]{16,2000})",
          ("bearer", "token"), 1, _has_digit),
    _rule("auth_header", Family.CONNECTION_STRING, r"(?i)\bbasic[ \t]+([A-Za-z0-9+/]{12,2000}={0,2})",
          ("basic",), 1, _basic_credentials),
    _rule("curl_credentials", Family.CONNECTION_STRING,
          r"\bcurl\b[^\n]*?[ \t](?:-u|--user)(?:[ \t]+|=)[\"']?[^:\s\"']{1,100}:([^\s\"']{3,200})", ("curl",), 1),
    _rule("cli_password", Family.CONNECTION_STRING,
          r"(?<![\w-])--(?:password|passwd|pass|token|api-key|apikey|secret|client-secret|auth-token)(?:=|[ \t]+)"
          r"(?:'([^'\n]{3,200})'|\"([^\"\n]{3,200})\"|([^\s'\"\\]{3,200}))", ("--pass", "--token", "--api", "--secret",
                                                                        "--client-secret", "--auth-token"), -1),
    _rule("cli_password", Family.CONNECTION_STRING,
          r"\bmysql(?:dump|admin|import|show|check|binlog|pump|sh)?\b[^\n]*?[ \t]-p"
          r"(?:'([^'\n]{3,200})'|\"([^\"\n]{3,200})\"|([^\s'\"-][^\s'\"]{2,200}))", ("mysql",), -1),
    _rule("url_credentials", Family.CONNECTION_STRING,
          r"\b[A-Za-z][A-Za-z0-9+.-]{1,30}://[^\s/:@'\"<>`]{0,256}:([^\s/'\"<>`]{1,256})@(?=[^\s/@'\"<>`])",
          ("://",), 1),
)

# Kinds found by the structural detectors (not by a token shape) and their families.
STRUCTURAL_KINDS: dict[str, str] = {
    "private_key": Family.PRIVATE_KEY,
    "connection_string_password": Family.CONNECTION_STRING,
    "url_query_secret": Family.CONNECTION_STRING,
    "netrc_password": Family.CREDENTIAL_FILE,
    "kubernetes_secret": Family.KUBERNETES,
    "terraform_state_secret": Family.TERRAFORM,
    "password": Family.KEY_VALUE,
    "assigned_secret": Family.KEY_VALUE,
    "high_entropy_secret": Family.KEY_VALUE,
}

# kind -> family, most specific first (the order in which overlapping findings are named).
KIND_FAMILY: dict[str, str] = {"private_key": Family.PRIVATE_KEY}
for _r in TOKEN_RULES:
    KIND_FAMILY.setdefault(_r.kind, _r.family)
for _kind, _family in STRUCTURAL_KINDS.items():
    KIND_FAMILY.setdefault(_kind, _family)
# Token shapes outrank key/value findings; the structural detectors sit between them.
_TAIL = ("url_credentials", "curl_credentials", "cli_password", "auth_header", "connection_string_password",
         "url_query_secret", "netrc_password", "kubernetes_secret", "terraform_state_secret", "password",
         "assigned_secret", "high_entropy_secret")
SECRET_KINDS: tuple[str, ...] = tuple(k for k in KIND_FAMILY if k not in _TAIL) + _TAIL
PRIORITY = {kind: i for i, kind in enumerate(SECRET_KINDS)}
