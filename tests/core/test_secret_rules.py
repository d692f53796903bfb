"""Every rule of the masker fires on a realistic sample of its own, in the file type where it occurs.

Values are generated here (random, in each credential's alphabet and length) and assembled from
pieces, so this file holds no real credential and does not itself read as one.
"""

from __future__ import annotations

import base64
import json
import random
import string

import pytest

from codex_core.secrets import KIND_FAMILY, SECRET_KINDS, Family, mask_secrets, redaction

RNG = random.Random(20261204)
LOWER, UPPER, DIGITS = string.ascii_lowercase, string.ascii_uppercase, string.digits
ALNUM = LOWER + UPPER + DIGITS
HEX = "0123456789abcdef"
B64 = ALNUM + "+/"


def rnd(alphabet: str, n: int) -> str:
    # Always at least two digits and two letters where the alphabet has them (real keys do).
    value = [RNG.choice(alphabet) for _ in range(n)]
    if n >= 8 and any(c.isdigit() for c in alphabet):
        value[1], value[3] = RNG.choice(DIGITS), RNG.choice(DIGITS)
    if n >= 8 and any(c.isalpha() for c in alphabet):
        letters = [c for c in alphabet if c.isalpha()]
        value[0], value[2] = RNG.choice(letters), RNG.choice(letters)
    return "".join(value)


def uuid() -> str:
    return "-".join(rnd(HEX, n) for n in (8, 4, 4, 4, 12))


def _jwt() -> str:
    head = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).decode().rstrip("=")
    body = base64.urlsafe_b64encode(json.dumps({"sub": rnd(DIGITS, 10)}).encode()).decode().rstrip("=")
    return f"{head}.{body}.{rnd(ALNUM + '_-', 43)}"


def samples() -> dict[str, tuple[str, str, str]]:
    """kind -> (path, file text, the secret that must disappear)."""
    s: dict[str, tuple[str, str, str]] = {}

    def add(kind: str, path: str, template: str, secret: str) -> None:
        s[kind] = (path, "# settings\n" + template.format(secret=secret) + "\n# end\n", secret)

    add("aws_access_key", "deploy/env.sh", "export AWS_ACCESS_KEY_ID={secret}", "AK" + "IA" + rnd(UPPER + DIGITS, 16))
    add("aws_secret_key", "deploy/aws.ini", "aws_secret_access_key = {secret}", rnd(B64, 40))
    add("aws_bedrock_key", "src/llm.py", 'BEDROCK = "{secret}"', "AB" + "SK" + rnd(B64, 120))
    add("google_api_key", "web/maps.js", "initMap('{secret}')", "AI" + "za" + rnd(ALNUM + "_-", 35))
    add(
        "azure_client_secret",
        "infra/app.json",
        '"clientCredential": "{secret}"',
        rnd(ALNUM, 3) + "8" + "Q~" + rnd(ALNUM + "_~.-", 34),
    )
    add(
        "azure_storage_key",
        "src/Storage.cs",
        'var conn = "DefaultEndpointsProtocol=https;AccountName=acct;Account' + 'Key={secret};";',
        rnd(B64, 86) + "==",
    )
    add(
        "azure_sas_signature",
        "docs/blob.md",
        "https://acct.blob.core.windows.net/c/f?sv=2022-11-02&se=2030-01-01&sp=r&si" + "g={secret}",
        rnd(ALNUM, 40) + "%3D",
    )
    add("alibaba_access_key", "config/oss.yaml", "endpoint: oss\nid: {secret}", "LT" + "AI" + rnd(ALNUM, 20))
    add(
        "digitalocean_token",
        ".github/workflows/deploy.yml",
        "  run: doctl auth init -t {secret}",
        "do" + "p_v1_" + rnd(HEX, 64),
    )
    add("heroku_key", "Procfile.env", "HEROKU={secret}", "HR" + "KU-AA" + rnd(ALNUM + "_-", 58))
    add("cloudflare_origin_ca_key", "scripts/cf.sh", 'CF="{secret}"', "v1" + ".0-" + rnd(HEX, 24) + "-" + rnd(HEX, 146))
    add("databricks_token", "notebooks/run.py", 'host_cfg = {{"t": "{secret}"}}', "da" + "pi" + rnd(HEX, 32))
    add(
        "terraform_cloud_token",
        ".terraformrc",
        'credentials "app.terraform.io" {{ t = "{secret}" }}',
        rnd(ALNUM, 14) + ".atlas" + "v1." + rnd(ALNUM + "_-", 67),
    )
    add("vault_token", "ci/vault.sh", "vault login {secret}", "hv" + "s." + rnd(ALNUM + "_-", 90))
    add("doppler_token", ".env.ci", "DOPPLER={secret}", "dp" + ".pt." + rnd(ALNUM, 43))
    add("pulumi_token", "ci/pulumi.sh", "pulumi login --t {secret}", "pu" + "l-" + rnd(HEX, 40))
    add("planetscale_token", "db/connect.ts", 'const pw = "{secret}"', "pscale" + "_pw_" + rnd(ALNUM + "_", 43))
    add("flyio_token", "fly/deploy.sh", "flyctl deploy -t {secret}", "fo" + "1_" + rnd(ALNUM + "_-", 43))
    add("yandex_key", "cloud/yc.py", 'YC = "{secret}"', "AQ" + "VN" + rnd(ALNUM + "_-", 36))
    add("openshift_token", "ops/oc.sh", "oc login --token={secret} https://api", "sha256" + "~" + rnd(ALNUM + "_-", 43))
    add("clickhouse_key", "analytics/ch.py", 'CH = "{secret}"', "4b" + "1d" + rnd(ALNUM, 38))
    add("github_token", "scripts/release.py", 'gh = Github("{secret}")', "gh" + "p_" + rnd(ALNUM, 36))
    add(
        "gitlab_token",
        ".gitlab-ci.yml",
        "  script: curl --header PRIVATE-TOKEN:{secret} api",
        "gl" + "pat-" + rnd(ALNUM + "_-", 20),
    )
    add("gitlab_session", "tests/http.txt", "Cookie: _gitlab_session={secret}", rnd(LOWER + DIGITS, 32))
    add("atlassian_token", "tools/jira.py", 'JIRA = "{secret}"', "AT" + "ATT3" + rnd(ALNUM + "_-", 180))
    add("circleci_token", "ci/circle.sh", "C={secret}", "CCI" + "PAT_" + rnd(ALNUM, 22) + "_" + rnd(HEX, 40))
    add("sourcegraph_token", "tools/sg.go", 'const t = "{secret}"', "sg" + "p_" + rnd(HEX, 16) + "_" + rnd(HEX, 40))
    add("sonar_token", "sonar-project.properties", "sonar.login={secret}", "sq" + "u_" + rnd(HEX, 40))
    add(
        "harness_token",
        "ci/harness.sh",
        "H={secret}",
        "pa" + "t." + rnd(ALNUM + "_-", 22) + "." + rnd(ALNUM, 24) + "." + rnd(ALNUM, 20),
    )
    add("octopus_key", "deploy/octo.ps1", "$Key = '{secret}'", "AP" + "I-" + rnd(UPPER + DIGITS, 26))
    add("buildkite_token", "ci/bk.sh", "BK={secret}", "bk" + "ua_" + rnd(HEX, 40))
    add("infracost_token", "ci/cost.sh", "I={secret}", "ic" + "o-" + rnd(ALNUM, 32))
    add("npm_token", ".npmrc", "//registry.npmjs.org/:_authToken={secret}", "np" + "m_" + rnd(ALNUM, 36))
    add(
        "pypi_token",
        ".pypirc",
        "[pypi]\nusername = __token__\npassword = {secret}",
        "py" + "pi-AgEIcHlwaS5vcmc" + rnd(ALNUM + "_-", 70),
    )
    add("rubygems_token", ".gem/credentials", "---\n:rubygems_api_key: {secret}", "ruby" + "gems_" + rnd(HEX, 48))
    add("nuget_key", "build/push.sh", "dotnet nuget push -k {secret}", "oy" + "2" + rnd(LOWER + DIGITS, 43))
    add(
        "nuget_config_password",
        "NuGet.Config",
        '<packageSourceCredentials><feed><add key="ClearTextPassword" value="{secret}" /></feed>',
        rnd(ALNUM, 20),
    )
    add(
        "clojars_token",
        "project.clj",
        ':deploy-repositories [["clojars" {{:password "{secret}"}}]]',
        "CLO" + "JARS_" + rnd(LOWER + DIGITS, 60),
    )
    add(
        "artifactory_token", "gradle.properties", "artifactory_contextUrl=x\nart={secret}", "AK" + "Cp" + rnd(ALNUM, 69)
    )
    add(
        "slack_token",
        "bot/app.py",
        'client = WebClient("{secret}")',
        "xo" + "xb-" + rnd(DIGITS, 12) + "-" + rnd(DIGITS, 13) + "-" + rnd(ALNUM, 24),
    )
    add(
        "slack_webhook",
        "alerts/notify.sh",
        "curl -X POST https://hooks.slack.com/services/{secret}",
        "T" + rnd(UPPER + DIGITS, 8) + "/B" + rnd(UPPER + DIGITS, 8) + "/" + rnd(ALNUM, 24),
    )
    add(
        "discord_webhook",
        "bot/hook.js",
        "fetch('https://discord.com/api/webhooks/" + rnd(DIGITS, 18) + "/{secret}')",
        rnd(ALNUM + "_-", 68),
    )
    add(
        "discord_bot_token",
        "bot/discord_bot.py",
        'client = discord.Client()\nclient.run("{secret}")',
        "M" + rnd(ALNUM, 23) + "." + rnd(ALNUM, 6) + "." + rnd(ALNUM + "_-", 27),
    )
    add(
        "teams_webhook",
        "alerts/teams.ps1",
        "$hook = 'https://acme.webhook.office.com/webhookb2/{secret}'",
        uuid() + "@" + uuid() + "/IncomingWebhook/" + rnd(HEX, 32) + "/" + uuid(),
    )
    add("telegram_bot_token", "bot/tg.py", 'BOT = "{secret}"', rnd(DIGITS, 10) + ":AA" + rnd(ALNUM + "_-", 33))
    add("twilio_key", "sms/send.rb", 'client = Twilio::REST::Client.new("{secret}", s)', "S" + "K" + rnd(HEX, 32))
    add(
        "sendgrid_key",
        "mail/send.py",
        'sg = SendGridAPIClient("{secret}")',
        "S" + "G." + rnd(ALNUM + "_-", 22) + "." + rnd(ALNUM + "_-", 43),
    )
    add("mailgun_key", "mail/mg.php", "$mg = Mailgun::create('{secret}');", "ke" + "y-" + rnd(HEX, 32))
    add("mailchimp_key", "mail/mc.js", "mailchimp.setConfig({{ k: '{secret}' }})", rnd(HEX, 32) + "-us" + "12")
    add("sendinblue_key", "mail/brevo.py", 'B = "{secret}"', "xkey" + "sib-" + rnd(HEX, 64) + "-" + rnd(ALNUM, 16))
    add("stripe_key", "billing/stripe.rb", "Stripe.api_key = '{secret}'", "sk" + "_live_" + rnd(ALNUM, 24))
    add("stripe_webhook_secret", "billing/hooks.py", 'WH = "{secret}"', "wh" + "sec_" + rnd(ALNUM, 32))
    add("square_token", "pay/square.js", "new Client({{ t: '{secret}' }})", "sq0" + "atp-" + rnd(ALNUM + "_-", 22))
    add("shopify_token", "shop/api.py", 'S = "{secret}"', "sh" + "pat_" + rnd(HEX, 32))
    add(
        "braintree_token",
        "pay/bt.java",
        'String t = "{secret}";',
        "access_token$" + "production$" + rnd(LOWER + DIGITS, 16) + "$" + rnd(HEX, 32),
    )
    add(
        "flutterwave_key",
        "pay/flw.php",
        "$k = '{secret}';",
        "FLW" + "SECK_TEST-" + rnd("abcdefgh0123456789", 32) + "-X",
    )
    add("plaid_token", "bank/plaid.py", 'item = "{secret}"', "access-" + "production-" + uuid())
    add("razorpay_key", "pay/rzp.js", "new Razorpay({{ key_id: '{secret}' }})", "rz" + "p_live_" + rnd(ALNUM, 14))
    add("duffel_token", "travel/duffel.ts", 'const d = "{secret}"', "duf" + "fel_live_" + rnd(ALNUM + "_-", 43))
    add(
        "gocardless_token",
        "pay/payments.rb",
        "GC = GoCardlessPro::Client.new(access_token: '{secret}')",
        "li" + "ve_" + rnd(ALNUM + "_-", 40),
    )
    add(
        "anthropic_key",
        "ai/claude.py",
        'client = Anthropic(api_key="{secret}")',
        "sk" + "-ant-api03-" + rnd(ALNUM + "_-", 93) + "AA",
    )
    add("openai_key", "ai/gpt.py", 'client = OpenAI(api_key="{secret}")', "sk" + "-proj-" + rnd(ALNUM, 48))
    add("huggingface_token", "ml/hub.py", 'login("{secret}")', "h" + "f_" + rnd(ALNUM, 34))
    add("perplexity_key", "ai/pplx.ts", "const k = '{secret}'", "pp" + "lx-" + rnd(ALNUM, 48))
    add("groq_key", "ai/groq.py", 'Groq("{secret}")', "gs" + "k_" + rnd(ALNUM, 52))
    add("replicate_token", "ai/rep.py", 'R = "{secret}"', "r" + "8_" + rnd(ALNUM, 37))
    add("postman_key", "api/postman.sh", "P={secret}", "PM" + "AK-" + rnd(HEX, 24) + "-" + rnd(HEX, 34))
    add("linear_key", "tools/linear.ts", "new LinearClient({{ k: '{secret}' }})", "lin" + "_api_" + rnd(ALNUM, 40))
    add(
        "notion_token",
        "tools/notion.js",
        "new Client({{ auth: '{secret}' }})",
        "nt" + "n_" + rnd(DIGITS, 11) + rnd(ALNUM, 35),
    )
    add("newrelic_key", "newrelic.js", "license: '{secret}'", "NR" + "AK-" + rnd(UPPER + DIGITS, 27))
    add("sentry_token", "ops/sentry.sh", "sentry-cli --auth {secret}", "sn" + "tryu_" + rnd(HEX, 64))
    add("grafana_token", "ops/grafana.py", 'G = "{secret}"', "gl" + "sa_" + rnd(ALNUM, 32) + "_" + rnd(HEX, 8))
    add(
        "age_secret_key",
        "keys/age.txt",
        "# created\n{secret}",
        "AGE-SECRET" + "-KEY-1" + "".join(RNG.choice("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L") for _ in range(58)),
    )
    add("onepassword_token", "ops/op.sh", "OP={secret}", "op" + "s_eyJ" + rnd(B64, 260))
    add(
        "dynatrace_token",
        "ops/dt.py",
        'DT = "{secret}"',
        "dt0" + "c01." + rnd(UPPER + DIGITS, 24) + "." + rnd(ALNUM, 64),
    )
    add("easypost_key", "ship/ep.rb", "EasyPost.api_key = '{secret}'", "EZ" + "AK" + rnd(ALNUM, 54))
    add("shippo_token", "ship/shippo.py", 'S = "{secret}"', "shi" + "ppo_live_" + rnd(HEX, 40))
    add("typeform_token", "forms/tf.js", "const t = '{secret}'", "tf" + "p_" + rnd(ALNUM + "_-", 59))
    add("prefect_token", "flows/prefect.py", 'P = "{secret}"', "pn" + "u_" + rnd(ALNUM, 36))
    add("readme_token", "docs/readme.sh", "R={secret}", "rd" + "me_" + rnd(LOWER + DIGITS, 70))
    add("scalingo_token", "deploy/sc.sh", "S={secret}", "tk" + "-us-" + rnd(ALNUM + "_-", 48))
    add("settlemint_token", "chain/sm.ts", "const t = '{secret}'", "sm" + "_pat_" + rnd(ALNUM, 16))
    add("frameio_token", "media/frame.py", 'F = "{secret}"', "fio" + "-u-" + rnd(ALNUM + "_-", 64))
    add("maxmind_key", "geo/GeoIP.conf", "LicenseKey {secret}", rnd(ALNUM, 6) + "_" + rnd(ALNUM, 29) + "_mm" + "k")
    add("adobe_secret", "media/adobe.js", "const s = '{secret}'", "p8" + "e-" + rnd(ALNUM, 32))
    add("airtable_token", "data/airtable.py", 'A = "{secret}"', "pa" + "t" + rnd(ALNUM, 14) + "." + rnd(HEX, 64))
    add("intra42_secret", "auth/42.py", 'S = "{secret}"', "s-s4" + "t2ud-" + rnd(HEX, 64))
    add(
        "mapbox_secret_token",
        "maps/mb.js",
        "const t = '{secret}'",
        "sk" + ".eyJ" + rnd(ALNUM, 60) + "." + rnd(ALNUM, 22),
    )
    add("facebook_token", "social/fb.py", 'T = "{secret}"', "EA" + "AC" + rnd(ALNUM, 120))
    add("twitter_bearer_token", "social/tw.py", 'B = "{secret}"', "A" * 22 + rnd(ALNUM, 90))
    add("dropbox_token", "sync/dbx.py", 'D = "{secret}"', "s" + "l." + rnd(ALNUM + "_-", 135))
    add("jwt", "tests/fixtures/session.txt", "cookie: session={secret}", "ey" + "J" + _jwt()[3:])
    add(
        "auth_header",
        "scripts/call.sh",
        "curl -H 'Authorization: Basic {secret}' https://api",
        base64.b64encode(f"deploy:{rnd(ALNUM, 16)}".encode()).decode(),
    )
    add("curl_credentials", "scripts/fetch.sh", "curl -u admin:{secret} https://nexus/repo", rnd(ALNUM, 14))
    add("cli_password", "scripts/backup.sh", "mysqldump -u root -p'{secret}' --all-databases > all.sql", rnd(ALNUM, 16))
    add("url_credentials", "config/db.yaml", "url: postgres://app:{secret}@db:5432/app", rnd(ALNUM, 16))
    add(
        "connection_string_password",
        "src/Data.cs",
        'var cs = "Server=tcp:db;Database=app;User Id=app;Pass' + 'word={secret};";',
        rnd(ALNUM, 16) + "!",
    )
    add(
        "url_query_secret",
        "src/Jdbc.java",
        'String url = "jdbc:mysql://db/app?user=app&pass' + 'word={secret}";',
        rnd(ALNUM, 16),
    )
    add("netrc_password", ".netrc", "machine api.example.org\n  login deploy\n  password {secret}", rnd(ALNUM, 18))
    add(
        "kubernetes_secret",
        "k8s/secret.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\ntype: Opaque\ndata:\n  username: YWRtaW4=\n"
        "  blob: {secret}",
        base64.b64encode(rnd(ALNUM, 24).encode()).decode(),
    )
    pw = rnd(ALNUM, 20)
    state = {
        "version": 4,
        "terraform_version": "1.9.0",
        "outputs": {},
        "resources": [
            {
                "type": "aws_db_instance",
                "instances": [
                    {
                        "attributes": {"engine": "postgres", "master_credentials": pw},
                        "sensitive_attributes": [[{"type": "get_attr", "value": "master_credentials"}]],
                    }
                ],
            }
        ],
    }
    s["terraform_state_secret"] = ("infra/terraform.tfstate", json.dumps(state, indent=2), pw)
    add("password", ".env", "DB_PASSWORD={secret}", rnd(ALNUM, 14))
    add("assigned_secret", "config/app.json", '"client_secret": "{secret}",', rnd(ALNUM, 24))
    add("high_entropy_secret", "src/sign.py", 'HMAC_KEY = "{secret}"', rnd(HEX, 40))
    # private keys: body lines of a PEM block
    body = "\n".join(rnd(B64, 64) for _ in range(4))
    s["private_key"] = (
        "deploy/id_rsa",
        f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----\n",
        body.split("\n")[1],
    )
    return s


SAMPLES = samples()


def test_every_rule_has_a_sample() -> None:
    assert set(SAMPLES) == set(SECRET_KINDS)
    assert set(KIND_FAMILY.values()) == {v for k, v in vars(Family).items() if not k.startswith("_")}


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_rule_masks_its_sample(kind: str) -> None:
    path, text, secret = SAMPLES[kind]
    masked, findings = mask_secrets(text, path=path)
    assert secret not in masked, f"{kind}: {secret[:4]}… survives in {path}"
    assert redaction(kind) in masked, f"{kind}: masked as {sorted({f.kind for f in findings})}"
    assert masked.count("\n") == text.count("\n")
    assert mask_secrets(masked, path=path)[0] == masked  # idempotent
    assert all(f.family == KIND_FAMILY[f.kind] for f in findings)


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("src/hash.py", 'EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"'),
        ("docs/CHANGELOG.md", "Fixed in 3f2a9c1e8d7b6a5f4e3d2c1b0a9f8e7d6c5b4a39 (see #123)."),
        ("src/ids.ts", "const ROOT_ID = '6f1c2d3e-4a5b-4c6d-8e7f-9a0b1c2d3e4f';"),
        ("docs/lock.md", '"integrity": "sha512-' + "Q" * 20 + 'abcDEF0123456789+/abcDEF0123456789abcdEFGH=="'),
        (
            "web/logo.css",
            ".logo { background: url(data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
            "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==); }",
        ),
        ("src/tokenize.py", "tokens = tokenizer(text)\ntoken_type = 'Bearer'\nmax_tokens = 512\n"),
        ("src/SKU.java", 'String sku = "SKU-2024-0001";'),
        ("config/ci.yml", "jobs:\n  test:\n    secrets: inherit\n    with:\n      key: ${{ runner.os }}-pip\n"),
        (".env.example", "API_KEY=changeme\nSECRET=${SECRET}\nTOKEN=<your-token>\nPASSWORD=\n"),
        (
            "k8s/configmap.yaml",
            "apiVersion: v1\nkind: ConfigMap\ndata:\n  LOG_LEVEL: debug\n  CACHE: aGVsbG8gd29ybGQ=\n",
        ),
        ("src/time.py", 'print("elapsed 1234567:Alpha")\nratio = "12345678:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefgh"'),
        ("docs/netrc.md", "The machine learning model needs a login; password rotation is monthly."),
        ("src/conn.py", 'DSN = "host=db user=app password=${DB_PASSWORD} dbname=app"'),
    ],
)
def test_ordinary_text_is_left_alone(path: str, text: str) -> None:
    masked, findings = mask_secrets(text, path=path)
    assert not findings, [(f.kind, f.line) for f in findings]
    assert masked == text
