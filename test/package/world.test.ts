/**
 * The test world itself (world.ts): what a command inside it sees, what the mock IMDS and the
 * recording proxy do and record, and that nothing is left behind.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import {
  AgentSandbox,
  extensionVersionOf,
  LINUX_HANDLER_NAME,
  PYTHON,
  requireZip,
} from './agent-driver.js';
import {
  AZ_ENVIRONMENT_PATH,
  dpkgStatusWith,
  IDENTITY_NOT_FOUND,
  IMDS_HANG,
  imdsError,
  imdsText,
  imdsToken,
  meminfo,
  slow,
  TOKEN_PATH,
  type World,
  withWorld,
} from './world.js';

const OS_RELEASE = 'ID=testos\nVERSION_ID="1.2"\nPRETTY_NAME="Test OS 1.2"\n';
const TOKEN_URL = `http://169.254.169.254${TOKEN_PATH}?api-version=2018-02-01&resource=ce6ff14a-7fdc-4685-bbe0-f6afdfcfa8e0`;

/**
 * GET `url` with Python's urllib inside the world; prints the status and the body, or the error.
 * argv: url, "metadata" (send Metadata: true) or "-", timeout seconds, proxy URL or "direct".
 */
const GET = `
import sys, urllib.request, urllib.error
url, metadata, timeout, proxy = sys.argv[1:5]
handler = urllib.request.ProxyHandler({} if proxy == 'direct' else {'http': proxy})
request = urllib.request.Request(url, headers={'Metadata': 'true'} if metadata == 'metadata' else {})
try:
    response = urllib.request.build_opener(handler).open(request, timeout=float(timeout))
    print(response.status, response.read().decode(), sep='\\n')
except urllib.error.HTTPError as error:
    print(error.code, error.read().decode(), sep='\\n')
except Exception as error:
    print('error', repr(error))
`;

async function get(
  world: World,
  url: string,
  { metadata = true, timeout = 5, proxy = 'direct' } = {},
): Promise<{ status: string; body: string }> {
  const run = await world.exec([
    PYTHON,
    '-c',
    GET,
    url,
    metadata ? 'metadata' : '-',
    String(timeout),
    proxy,
  ]);
  assert.equal(run.exitCode, 0, run.stderr);
  const [status = '', ...body] = run.stdout.trimEnd().split('\n');
  return { status, body: body.join('\n') };
}

describe('a world', { concurrency: true }, () => {
  test('shows the fixture os-release files and /proc/meminfo inside it, and the real ones outside', async () => {
    const realMeminfo = await fs.readFile('/proc/meminfo', 'utf8');
    const realOsRelease = await fs.readFile('/etc/os-release', 'utf8');
    const fixtureMeminfo = meminfo(944_000);
    await withWorld({ osRelease: OS_RELEASE, meminfo: fixtureMeminfo }, async (world) => {
      const inside = await world.exec([
        '/bin/sh',
        '-c',
        'cat /etc/os-release; echo ---; cat /usr/lib/os-release; echo ---; cat /proc/meminfo; echo ---; stat -c %F /etc/os-release',
      ]);
      assert.equal(inside.exitCode, 0, inside.stderr);
      assert.equal(
        inside.stdout,
        `${OS_RELEASE}---\n${OS_RELEASE}---\n${fixtureMeminfo}---\nregular file\n`,
      );
      assert.match(fixtureMeminfo, /^MemTotal: {9}944000 kB\n/);
      // The test process is not in the world.
      assert.equal(await fs.readFile('/etc/os-release', 'utf8'), realOsRelease);
      assert.notEqual(await fs.readFile('/proc/meminfo', 'utf8'), fixtureMeminfo);
    });
    assert.equal(
      (await fs.readFile('/proc/meminfo', 'utf8')).split('\n')[0],
      realMeminfo.split('\n')[0],
    );
  });

  test('the mock IMDS answers on 169.254.169.254:80 in script order (the last reply repeats) and records every request', async () => {
    await withWorld(
      {
        imds: {
          [TOKEN_PATH]: [imdsError(429, { retryAfter: 1 }), imdsError(500), imdsToken('MARKER_1')],
          [AZ_ENVIRONMENT_PATH]: [imdsText('AzureUSGovernmentCloud')],
        },
      },
      async (world) => {
        const answers = [];
        for (let i = 0; i < 4; i++) answers.push(await get(world, TOKEN_URL));
        assert.deepEqual(
          answers.map((answer) => answer.status),
          ['429', '500', '200', '200'],
        );
        const token = JSON.parse(answers[2]?.body ?? '{}') as { access_token: string };
        assert.match(token.access_token, /^eyJ[\w-]+\.[\w-]+\.MARKER_1$/);
        const cloud = await get(
          world,
          `http://169.254.169.254${AZ_ENVIRONMENT_PATH}?api-version=2018-10-01&format=text`,
        );
        assert.deepEqual(cloud, { status: '200', body: 'AzureUSGovernmentCloud' });
        assert.equal((await get(world, 'http://169.254.169.254/metadata/elsewhere')).status, '404');

        const requests = await world.imdsRequests(TOKEN_PATH);
        assert.equal(requests.length, 4);
        assert.deepEqual(
          requests.map((request) => request.reply),
          ['429', '500', '200', '200'],
        );
        for (const request of requests) {
          assert.equal(request.method, 'GET');
          assert.equal(request.headers.metadata, 'true');
          assert.equal(
            request.url,
            `${TOKEN_PATH}?api-version=2018-02-01&resource=ce6ff14a-7fdc-4685-bbe0-f6afdfcfa8e0`,
          );
        }
        assert.equal((await world.imdsRequests()).length, 6);
      },
    );
  });

  test('like the real IMDS, a request without Metadata: true gets 400 and consumes no reply', async () => {
    await withWorld(
      { imds: { [TOKEN_PATH]: [IDENTITY_NOT_FOUND, imdsToken('M')] } },
      async (world) => {
        const bare = await get(world, TOKEN_URL, { metadata: false });
        assert.equal(bare.status, '400');
        assert.match(bare.body, /Required metadata header not specified/);
        const scripted = await get(world, TOKEN_URL);
        assert.deepEqual(scripted, {
          status: '400',
          body: '{"error":"invalid_request","error_description":"Identity not found"}',
        });
        const requests = await world.imdsRequests();
        assert.deepEqual(
          requests.map((request) => request.reply),
          ['rejected 400: Required metadata header not specified', '400'],
        );
      },
    );
  });

  test("'refused' has no listener; a hanging reply is accepted and never answered; a slow one comes late", async () => {
    await withWorld({ imds: 'refused' }, async (world) => {
      const answer = await get(world, TOKEN_URL);
      assert.match(answer.status + answer.body, /error.*Connection refused/);
      assert.deepEqual(await world.imdsRequests(), []);
    });
    await withWorld(
      { imds: { [TOKEN_PATH]: [IMDS_HANG], [AZ_ENVIRONMENT_PATH]: [slow(1500, imdsText('X'))] } },
      async (world) => {
        const hung = await get(world, TOKEN_URL, { timeout: 1 });
        assert.match(hung.status + hung.body, /error.*timed out/);
        assert.deepEqual(
          (await world.imdsRequests(TOKEN_PATH)).map((request) => request.reply),
          ['hang'],
        );
        const url = `http://169.254.169.254${AZ_ENVIRONMENT_PATH}?api-version=2018-10-01&format=text`;
        const early = await get(world, url, { timeout: 0.5 });
        assert.match(early.status + early.body, /timed out/);
        const started = performance.now();
        assert.deepEqual(await get(world, url, { timeout: 5 }), { status: '200', body: 'X' });
        assert.ok(performance.now() - started >= 1400);
      },
    );
  });

  test('the recording proxy records absolute-URI requests (and forwards them) and CONNECT lines', async () => {
    await withWorld({ proxy: true, imds: { [TOKEN_PATH]: [imdsToken('P')] } }, async (world) => {
      assert.match(world.proxyUrl ?? '', /^http:\/\/127\.0\.0\.1:\d+$/);
      assert.deepEqual(Object.keys(world.proxyEnvironment()).sort(), [
        'HTTPS_PROXY',
        'HTTP_PROXY',
        'http_proxy',
        'https_proxy',
      ]);
      const viaProxy = await get(world, TOKEN_URL, { proxy: world.proxyUrl ?? '' });
      assert.equal(viaProxy.status, '200');
      const tunnel = await world.exec([
        PYTHON,
        '-c',
        `import http.client, sys
c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]), timeout=5)
c.set_tunnel('packages.example.invalid', 443)
try:
    c.request('GET', '/')
except OSError as error:
    print(error)`,
        new URL(world.proxyUrl ?? 'http://x:1').port,
      ]);
      assert.match(tunnel.stdout, /502/);
      const proxied = await world.proxyRequests();
      assert.deepEqual(
        proxied.map((request) => [request.method, request.url]),
        [
          ['GET', TOKEN_URL],
          ['CONNECT', 'packages.example.invalid:443'],
        ],
      );
      // The forwarded request reached the mock IMDS too: both sides see it.
      assert.equal((await world.imdsRequests(TOKEN_PATH)).length, 1);
    });
  });

  test('files replaced or made absent, directories added, a dpkg database with one more package', async () => {
    const legacy =
      '/var/lib/waagent/Microsoft.Azure.ActiveDirectory.LinuxSSH.AADLoginForLinux-1.0.1588.3';
    await withWorld(
      {
        osRelease: null,
        usrLibOsRelease: OS_RELEASE,
        dirs: [legacy],
        files: { '/var/lib/dpkg/status': await dpkgStatusWith('aadlogin', '1.0.016050002') },
      },
      async (world) => {
        const run = await world.exec([
          '/bin/sh',
          '-c',
          `test -e /etc/os-release || echo 'no /etc/os-release'; cat /usr/lib/os-release; test -d '${legacy}' && echo legacy; dpkg-query -W -f='\${Status} \${Version}\\n' aadlogin`,
        ]);
        assert.equal(run.exitCode, 0, run.stderr);
        assert.equal(
          run.stdout,
          `no /etc/os-release\n${OS_RELEASE}legacy\ninstall ok installed 1.0.016050002\n`,
        );
      },
    );
    await withWorld({ hide: ['/usr/bin/dpkg-query'] }, async (world) => {
      const run = await world.exec([
        '/bin/sh',
        '-c',
        'command -v dpkg-query || echo hidden; ls /usr/bin/dpkg | head -1',
      ]);
      assert.equal(run.stdout, 'hidden\n/usr/bin/dpkg\n');
    });
    assert.ok((await fs.stat('/usr/bin/dpkg-query')).isFile());
  });

  test("the driver's run executes the agent's command inside the world, in the handler's folder", async () => {
    const zip = await requireZip(LINUX_HANDLER_NAME);
    const sandbox = await AgentSandbox.create('world');
    try {
      const handler = await sandbox.unpack(zip, extensionVersionOf());
      await handler.writeSettings(0, { publicSettings: {} });
      const seen = path.join(sandbox.root, 'seen');
      await withWorld({ meminfo: meminfo(123_456) }, async (world) => {
        const run = await world.run(handler, 'disable', {
          seq: 0,
          // An inner launcher still applies, inside the world.
          launcher: (argv) => [
            '/bin/sh',
            '-c',
            'pwd > "$0"; grep MemTotal /proc/meminfo >> "$0"; exec "$@"',
            seen,
            ...argv,
          ],
        });
        assert.equal(run.timedOut, false);
        assert.match(run.command, /aadsshlogin-handler\.sh disable$/);
      });
      assert.equal(
        await fs.readFile(seen, 'utf8'),
        `${handler.dir}\nMemTotal:         123456 kB\n`,
      );
    } finally {
      await sandbox.cleanup();
    }
  });

  test('closing a world ends its keeper, and with it the namespaces', async () => {
    let pid = 0;
    let dir = '';
    await withWorld({ meminfo: meminfo(1000), proxy: true }, async (world) => {
      pid = world.pid;
      dir = world.dir;
      assert.doesNotThrow(() => process.kill(pid, 0));
    });
    assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' });
    await assert.rejects(fs.stat(dir), { code: 'ENOENT' });
  });
});
