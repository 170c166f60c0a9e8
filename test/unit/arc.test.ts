import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { HandlerFailure } from '../../src/failures.js';
import {
  answeringChallenge,
  challengeRealm,
  HimdsChallengeFailed,
  MAX_KEY_BYTES,
  readChallengeKey,
} from '../../src/io/himds.js';
import { type Imds, type ImdsAnswer, ImdsUnreachable } from '../../src/io/imds.js';
import { adoptProxyEnvironment, arcProxy } from '../../src/linux/arc-proxy.js';
import {
  ARC_INSTANCE_PATH,
  ARC_TOKEN_PATH,
  checkArcIdentity,
  readArcCloud,
} from '../../src/linux/checks/arc-identity.js';
import {
  AZCMAGENT_SYSTEMD_CONF,
  detectMachineKind,
  HIMDS_EXECUTABLE,
} from '../../src/linux/machine-kind.js';
import { fakeClock, memoryLog, withTemporaryFolder } from '../fakes.js';

const KEY = 'c2VjcmV0LWtleS1jb250ZW50LTQyNDI0Mg';
const TOKEN = 'eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJhcmMifQ.arc-signature-part';

function facts(files: Record<string, string>, env: Record<string, string> = {}) {
  return {
    exists: async (file: string) => file in files,
    readText: async (file: string) => files[file],
    env,
  };
}

describe('which machine this is', () => {
  test('no himds executable: an Azure VM, whatever the environment says', async () => {
    const kind = await detectMachineKind(
      facts({}, { IMDS_ENDPOINT: 'http://localhost:40342', IDENTITY_ENDPOINT: 'x' }),
    );
    assert.equal(kind.kind, 'azure-vm');
    assert.match(kind.evidence, /does not exist/);
  });

  test('himds present, confirmed by the agent variables and its systemd drop-in', async () => {
    const kind = await detectMachineKind(
      facts(
        {
          [HIMDS_EXECUTABLE]: '',
          [AZCMAGENT_SYSTEMD_CONF]:
            '[Manager]\nDefaultEnvironment="IMDS_ENDPOINT=http://localhost:40342" "IDENTITY_ENDPOINT=http://localhost:40342/metadata/identity/oauth2/token"\n',
        },
        { IMDS_ENDPOINT: 'http://localhost:40342', IDENTITY_ENDPOINT: 'http://localhost:40342/x' },
      ),
    );
    assert.equal(kind.kind, 'arc');
    assert.equal(kind.description, 'Azure Arc-enabled server');
    assert.match(kind.evidence, /IMDS_ENDPOINT and IDENTITY_ENDPOINT set/);
    assert.match(kind.evidence, /azcmagent\.conf sets IMDS_ENDPOINT/);
  });

  test('himds present without any confirmation is still Arc, and says so', async () => {
    const kind = await detectMachineKind(facts({ [HIMDS_EXECUTABLE]: '' }));
    assert.equal(kind.kind, 'arc');
    assert.match(kind.evidence, /no IMDS_ENDPOINT\/IDENTITY_ENDPOINT to confirm it/);
  });
});

describe('the HIMDS challenge', () => {
  test('WWW-Authenticate realms in the forms seen: any case, quoted or not', () => {
    assert.equal(
      challengeRealm('Basic realm=/var/opt/azcmagent/tokens/a.key'),
      '/var/opt/azcmagent/tokens/a.key',
    );
    assert.equal(
      challengeRealm('basic REALM="/var/opt/azcmagent/tokens/b.key"'),
      '/var/opt/azcmagent/tokens/b.key',
    );
    assert.equal(challengeRealm('Bearer realm=/x.key'), undefined);
    assert.equal(challengeRealm('Basic'), undefined);
    assert.equal(challengeRealm(undefined), undefined);
  });

  async function tokens(body: (folder: string) => Promise<void>) {
    await withTemporaryFolder(async (dir) => {
      const folder = path.join(await fs.realpath(dir), 'tokens');
      await fs.mkdir(folder);
      await body(folder);
    });
  }

  test('a regular .key file directly in the tokens folder is read', async () => {
    await tokens(async (folder) => {
      await fs.writeFile(path.join(folder, 'id.key'), KEY);
      assert.equal(await readChallengeKey(path.join(folder, 'id.key'), folder), KEY);
    });
  });

  test('refused: a symbolic link, even to a key in the folder', async () => {
    await tokens(async (folder) => {
      await fs.writeFile(path.join(folder, 'real.key'), KEY);
      await fs.symlink(path.join(folder, 'real.key'), path.join(folder, 'link.key'));
      await assert.rejects(
        readChallengeKey(path.join(folder, 'link.key'), folder),
        (error: Error) =>
          error instanceof HimdsChallengeFailed && /is a symbolic link/.test(error.message),
      );
    });
  });

  test('refused: outside the tokens folder, below it, or through ..', async () => {
    await tokens(async (folder) => {
      const outside = path.join(path.dirname(folder), 'shadow.key');
      await fs.writeFile(outside, KEY);
      await fs.mkdir(path.join(folder, 'sub'));
      await fs.writeFile(path.join(folder, 'sub', 'deep.key'), KEY);
      for (const realm of [
        outside,
        path.join(folder, 'sub', 'deep.key'),
        `${folder}/../shadow.key`,
        'relative.key',
      ]) {
        await assert.rejects(readChallengeKey(realm, folder), (error: Error) => {
          assert.ok(error instanceof HimdsChallengeFailed);
          assert.match(error.message, /not directly in|not a plain absolute path/);
          assert.ok(!error.message.includes(KEY));
          return true;
        });
      }
    });
  });

  test('refused: larger than 4096 bytes, not .key, a folder, or missing', async () => {
    await tokens(async (folder) => {
      await fs.writeFile(path.join(folder, 'big.key'), 'k'.repeat(5 * 1024));
      await fs.writeFile(path.join(folder, 'id.txt'), KEY);
      await fs.mkdir(path.join(folder, 'dir.key'));
      const cases: [string, RegExp][] = [
        ['big.key', new RegExp(`larger than ${MAX_KEY_BYTES} bytes`)],
        ['id.txt', /does not end in \.key/],
        ['dir.key', /not a regular file/],
        ['gone.key', /does not exist/],
      ];
      for (const [name, pattern] of cases) {
        await assert.rejects(readChallengeKey(path.join(folder, name), folder), (error: Error) => {
          assert.ok(error instanceof HimdsChallengeFailed, String(error));
          assert.match(error.message, pattern);
          return true;
        });
      }
    });
  });

  test('refused: the tokens folder itself is a symbolic link', async () => {
    await withTemporaryFolder(async (dir) => {
      const base = await fs.realpath(dir);
      await fs.mkdir(path.join(base, 'elsewhere'));
      await fs.writeFile(path.join(base, 'elsewhere', 'id.key'), KEY);
      const folder = path.join(base, 'tokens');
      await fs.symlink(path.join(base, 'elsewhere'), folder);
      await assert.rejects(
        readChallengeKey(path.join(folder, 'id.key'), folder),
        /not a real folder/,
      );
    });
  });

  /** HIMDS as Arc's docs describe it: 401 with a realm, then 200 only with the key. */
  function fakeHimds(options: { realm?: string | null; status?: number } = {}) {
    const requests: { path: string; authorization: string | undefined }[] = [];
    const himds: Imds = {
      async get(pathAndQuery, { headers }) {
        requests.push({ path: pathAndQuery, authorization: headers?.Authorization });
        if (headers?.Authorization === `Basic ${KEY}`) {
          return {
            status: options.status ?? 200,
            body: JSON.stringify({ access_token: TOKEN }),
            retryAfterMs: undefined,
          };
        }
        return {
          status: 401,
          body: '',
          retryAfterMs: undefined,
          wwwAuthenticate:
            options.realm === null
              ? undefined
              : `Basic realm=${options.realm ?? '/var/opt/azcmagent/tokens/id.key'}`,
        };
      },
    };
    return { himds, requests };
  }

  test('the challenge is answered with the key, which is handed over as a secret first', async () => {
    const { himds, requests } = fakeHimds();
    const secrets: string[] = [];
    const realms: string[] = [];
    const answering = answeringChallenge(himds, {
      readKey: async (realm) => {
        realms.push(realm);
        return KEY;
      },
      onSecret: (secret) => secrets.push(secret),
    });
    const answer = await answering.get(ARC_TOKEN_PATH, { timeoutMs: 1000 });
    assert.equal(answer.status, 200);
    assert.deepEqual(realms, ['/var/opt/azcmagent/tokens/id.key']);
    assert.deepEqual(secrets, [KEY]);
    assert.deepEqual(
      requests.map((request) => request.authorization),
      [undefined, `Basic ${KEY}`],
    );
  });

  test('a 401 without a realm fails clearly, without asking for a key', async () => {
    const { himds } = fakeHimds({ realm: null });
    let asked = false;
    const answering = answeringChallenge(himds, {
      readKey: async () => {
        asked = true;
        return KEY;
      },
    });
    await assert.rejects(
      answering.get(ARC_TOKEN_PATH, { timeoutMs: 1000 }),
      /401 without naming a key file \(no WWW-Authenticate header\)/,
    );
    assert.equal(asked, false);
  });
});

describe('the identity check on Arc', () => {
  const log = () => memoryLog();
  const withKey = (himds: Imds) => answeringChallenge(himds, { readKey: async () => KEY });

  test('a token from HIMDS confirms the identity; the token never appears in the result', async () => {
    const answers: ImdsAnswer[] = [
      {
        status: 401,
        body: '',
        retryAfterMs: undefined,
        wwwAuthenticate: 'Basic realm=/var/opt/azcmagent/tokens/id.key',
      },
      { status: 200, body: JSON.stringify({ access_token: TOKEN }), retryAfterMs: undefined },
    ];
    const himds: Imds = {
      get: async () => answers.shift() ?? { status: 500, body: '', retryAfterMs: undefined },
    };
    const message = await checkArcIdentity({
      himds: withKey(himds),
      clock: fakeClock(),
      log: log(),
    });
    assert.match(message, /Azure Arc-enabled server's system-assigned identity is present/);
    assert.ok(!message.includes(TOKEN));
  });

  test('HIMDS down past the budget is the Arc code, never 22', async () => {
    const himds: Imds = {
      get: async () => {
        throw new ImdsUnreachable('connect ECONNREFUSED 127.0.0.1:40342');
      },
    };
    await assert.rejects(
      checkArcIdentity({
        himds: withKey(himds),
        clock: fakeClock(),
        log: log(),
        random: () => 0.5,
      }),
      (error: unknown) => {
        assert.ok(error instanceof HandlerFailure);
        assert.equal(error.kind, 'arcAgentUnavailable');
        assert.equal(error.code, 35);
        assert.match(error.detail, /ECONNREFUSED 127\.0\.0\.1:40342/);
        assert.match(error.operatorMessage, /azcmagent show/);
        assert.match(error.operatorMessage, /reconnect/);
        return true;
      },
    );
  });

  test('a refused key file is the Arc code, naming the file and why', async () => {
    const himds: Imds = {
      get: async () => ({
        status: 401,
        body: '',
        retryAfterMs: undefined,
        wwwAuthenticate: 'Basic realm=/etc/shadow',
      }),
    };
    await assert.rejects(
      checkArcIdentity({ himds: answeringChallenge(himds), clock: fakeClock(), log: log() }),
      (error: unknown) => {
        assert.ok(error instanceof HandlerFailure);
        assert.equal(error.code, 35);
        assert.match(
          error.detail,
          /"\/etc\/shadow", which is not directly in \/var\/opt\/azcmagent\/tokens/,
        );
        return true;
      },
    );
  });

  test('the cloud from compute.azEnvironment, in any case', async () => {
    const himds: Imds = {
      get: async (pathAndQuery) => {
        assert.equal(pathAndQuery, ARC_INSTANCE_PATH);
        return {
          status: 200,
          body: JSON.stringify({
            compute: { azEnvironment: 'AZUREUSGOVERNMENTCLOUD', location: 'x' },
          }),
          retryAfterMs: undefined,
        };
      },
    };
    assert.equal(
      (await readArcCloud(himds, { clock: fakeClock() }))?.name,
      'AzureUSGovernmentCloud',
    );
    const garbage: Imds = {
      get: async () => ({ status: 200, body: 'nope', retryAfterMs: undefined }),
    };
    assert.equal(await readArcCloud(garbage, { clock: fakeClock() }), undefined);
  });
});

describe('the proxy on Arc', () => {
  const LOCALCONFIG = JSON.stringify({
    'proxy.url': 'http://user:pw@proxy.contoso.com:3128',
    'proxy.bypass': ['ARM', 'AAD'],
    'extensions.allowlist': 'Microsoft.Azure.ActiveDirectory/AADSSHLoginForLinux',
  });

  test('proxy.url of localconfig.json when the environment has none; local addresses bypass it', () => {
    const proxy = arcProxy({ PATH: '/usr/bin' }, LOCALCONFIG);
    assert.equal(proxy.environment.https_proxy, 'http://user:pw@proxy.contoso.com:3128');
    assert.equal(proxy.environment.HTTP_PROXY, 'http://user:pw@proxy.contoso.com:3128');
    assert.equal(proxy.environment.no_proxy, 'localhost,127.0.0.1');
    assert.deepEqual(proxy.bypass, ['ARM', 'AAD']);
    assert.match(
      proxy.source,
      /proxy\.url of \/var\/opt\/azcmagent\/localconfig\.json \(http:\/\/proxy\.contoso\.com:3128\)/,
    );
    assert.ok(!proxy.source.includes('pw'), 'no credentials in the log');
  });

  test('the keys may also sit under "config"', () => {
    const proxy = arcProxy({}, JSON.stringify({ config: { 'proxy.url': 'http://p:8080' } }));
    assert.equal(proxy.environment.http_proxy, 'http://p:8080');
  });

  test("the environment's proxy wins, and keeps its no_proxy", () => {
    const proxy = arcProxy(
      { HTTPS_PROXY: 'http://env-proxy:3128', no_proxy: '.contoso.com' },
      LOCALCONFIG,
    );
    assert.equal(proxy.environment.https_proxy, 'http://env-proxy:3128');
    assert.equal(proxy.environment.no_proxy, '.contoso.com,localhost,127.0.0.1');
    assert.match(proxy.source, /the environment/);
  });

  test('no proxy anywhere: none', () => {
    assert.deepEqual(arcProxy({}, undefined).environment, {});
    assert.deepEqual(arcProxy({}, '{"proxy.url": ""}').environment, {});
  });

  test('a malformed localconfig.json fails clearly with the Arc code', () => {
    for (const [text, pattern] of [
      ['{"proxy.url": ', /not valid JSON/],
      ['{"proxy.url": 8080}', /proxy\.url: /],
      ['{"proxy.bypass": "ARM"}', /proxy\.bypass: /],
      ['{"proxy.url": "socks5://p:1080"}', /not an http or https URL/],
      ['{"proxy.url": "not a url"}', /not a URL/],
    ] as const) {
      assert.throws(
        () => arcProxy({}, text),
        (error: unknown) =>
          error instanceof HandlerFailure && error.code === 35 && pattern.test(error.detail),
        text,
      );
    }
  });

  test('adopting a proxy replaces only the proxy variables', () => {
    const env: Record<string, string | undefined> = {
      PATH: '/bin',
      HTTP_PROXY: 'old',
      no_proxy: 'x',
    };
    adoptProxyEnvironment(env, { http_proxy: 'http://p:1', HTTP_PROXY: 'http://p:1' });
    assert.deepEqual(env, { PATH: '/bin', http_proxy: 'http://p:1', HTTP_PROXY: 'http://p:1' });
  });
});
