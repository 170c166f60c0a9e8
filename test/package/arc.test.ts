/**
 * AADSSHLoginForLinux on an Azure Arc-enabled server, run by the built zip through its
 * HandlerManifest.json commands, in a sandboxed "Arc machine" (vm.ts: a Debian 12 root in its own
 * mount and network namespaces) that has
 *
 * - `/opt/azcmagent/bin/himds` and the agent's systemd drop-in, as the Connected Machine agent
 *   installs them;
 * - a mock HIMDS (himds.ts) on 127.0.0.1:40342 with the key-file challenge, the key file written
 *   by the test under /var/opt/azcmagent/tokens/;
 * - nothing useful on 169.254.169.254: the world's IMDS only records (any request there fails the
 *   test);
 * - a HandlerEnvironment.json as on Arc: the per-version log folder
 *   /var/lib/GuestConfig/extension_logs/<Publisher>.<Type>-<version>, no events folder;
 * - commands started with the extension manager's environment: no ConfigSequenceNumber and no
 *   AZURE_GUEST_AGENT_* variables, but IMDS_ENDPOINT and IDENTITY_ENDPOINT;
 * - the packages.microsoft.com stand-in (repos.ts) named by the `repository` settings.
 *
 * Assumes `npm run package` ran.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import {
  AGENT_PATH,
  assertExit,
  buildNextVersion,
  type CommandRun,
  extensionVersionOf,
  filesContaining,
  type HandlerInstance,
  LINUX_HANDLER_NAME,
  type LogLine,
  type Operation,
  parseLogLine,
  requireZip,
} from './agent-driver.js';
import { startHimds, TOKENS_FOLDER } from './himds.js';
import { serveRepository } from './repos.js';
import { type LinuxVm, linuxVm } from './vm.js';
import { fakeAccessToken } from './world.js';

const version = extensionVersionOf();
const KEY_ID = '406109b6-e357-4a7f-a2df-d14e7e8a1bd5';
const REALM = `${TOKENS_FOLDER}/${KEY_ID}.key`;
let zip = '';

before(async () => {
  zip = await requireZip(LINUX_HANDLER_NAME);
});

/** A random secret in base64url characters (usable in a key file and as a JWT's signature). */
function secret(label: string): string {
  return `${label}${randomBytes(24).toString('base64url')}`;
}

/** One version of the handler unpacked on the Arc machine, run as the extension manager runs it. */
interface ArcHandler {
  handler: HandlerInstance;
  /** Runs a command as the Arc extension manager starts it. */
  run(operation: Operation): Promise<CommandRun>;
  /** This version's log (its own folder on Arc). */
  logLines(): Promise<LogLine[]>;
  status(): Promise<{ status: string; code: number; message: string }>;
}

interface ArcMachine extends ArcHandler {
  vm: LinuxVm;
  key: string;
  token: string;
  /** Unpacks another version beside the first, with the same settings. */
  unpack(zip: string, version: string): Promise<ArcHandler>;
  /** Every folder the handler could have written to: its logs, status, config, state and sandbox. */
  handlerFiles(): string[];
}

/** The Connected Machine agent's environment for the extensions it starts. */
const ARC_ENVIRONMENT = [
  `PATH=${AGENT_PATH}`,
  'LANG=C',
  'IMDS_ENDPOINT=http://localhost:40342',
  'IDENTITY_ENDPOINT=http://localhost:40342/metadata/identity/oauth2/token',
];

/** The per-version log folder of Arc's HandlerEnvironment.json. */
function arcLogFolder(handlerVersion: string): string {
  return `/var/lib/GuestConfig/extension_logs/${LINUX_HANDLER_NAME}-${handlerVersion}`;
}

async function arcHandler(
  vm: LinuxVm,
  handlerZip: string,
  handlerVersion: string,
  publicSettings: Record<string, unknown>,
): Promise<ArcHandler> {
  const handler = await vm.sandbox.unpack(handlerZip, handlerVersion);
  const logFolder = arcLogFolder(handlerVersion);
  // HandlerEnvironment.json as on Arc: the per-version log folder, no events folder.
  await fs.writeFile(
    path.join(handler.dir, 'HandlerEnvironment.json'),
    JSON.stringify([
      {
        name: LINUX_HANDLER_NAME,
        version: 1,
        handlerEnvironment: {
          logFolder,
          configFolder: handler.configFolder,
          statusFolder: handler.statusFolder,
          heartbeatFile: handler.heartbeatFile,
        },
      },
    ]),
  );
  await fs.rm(handler.eventsFolder, { recursive: true, force: true });
  await handler.writeSettings(0, { publicSettings });
  return {
    handler,
    run: (operation) =>
      vm.world.run(handler, operation, {
        seq: 0,
        launcher: (argv) => ['/usr/bin/env', '-i', ...ARC_ENVIRONMENT, ...argv],
      }),
    async logLines() {
      const text = (await vm.root.readFile(`${logFolder}/aadsshlogin-handler.log`)) ?? '';
      return text
        .split('\n')
        .filter((line) => line !== '')
        .map(parseLogLine);
    },
    async status() {
      const text = (await handler.readStatusText(0)) ?? '[]';
      const [entry] = JSON.parse(text) as [
        { status: { status: string; code: number; formattedMessage: { message: string } } },
      ];
      return {
        status: entry.status.status,
        code: entry.status.code,
        message: entry.status.formattedMessage.message,
      };
    },
  };
}

async function arcMachine(
  options: {
    proxy?: boolean;
    publicSettings?: (vm: LinuxVm) => Promise<Record<string, unknown>>;
  } = {},
): Promise<ArcMachine> {
  const vm = await linuxVm({
    kind: 'debian',
    label: 'arc',
    imds: {},
    proxy: options.proxy ?? false,
  });
  try {
    await vm.root.writeFile('/opt/azcmagent/bin/himds', '#!/bin/sh\nexit 0\n', 0o755);
    await vm.root.writeFile(
      '/lib/systemd/system.conf.d/azcmagent.conf',
      '[Manager]\nDefaultEnvironment="IMDS_ENDPOINT=http://localhost:40342" "IDENTITY_ENDPOINT=http://localhost:40342/metadata/identity/oauth2/token"\n',
    );
    const key = secret('key');
    const token = fakeAccessToken(secret('tok'));
    await fs.mkdir(vm.root.path(TOKENS_FOLDER), { recursive: true, mode: 0o750 });
    await vm.root.writeFile(REALM, key, 0o600);
    const publicSettings = options.publicSettings
      ? await options.publicSettings(vm)
      : vm.publicSettings;
    const first = await arcHandler(vm, zip, version, publicSettings);
    return {
      ...first,
      vm,
      key,
      token,
      unpack: (otherZip, otherVersion) => arcHandler(vm, otherZip, otherVersion, publicSettings),
      handlerFiles: () => [vm.root.path('/var/lib/GuestConfig'), vm.sandbox.root],
    };
  } catch (error) {
    await vm.close();
    throw error;
  }
}

/** `diagnose --json` on the Arc machine, as an administrator runs it: its items by id. */
async function diagnoseItems(
  arc: ArcMachine,
): Promise<Map<string, { verdict: string; detail: string }>> {
  const run = await arc.vm.world.exec(
    [
      '/usr/bin/env',
      '-i',
      ...ARC_ENVIRONMENT,
      `${arc.handler.dir}/handler/aadsshlogin-handler.sh`,
      'diagnose',
      '--json',
    ],
    { timeoutMs: 120_000 },
  );
  assert.ok(run.stdout.trim(), `diagnose printed nothing (exit ${run.exitCode}): ${run.stderr}`);
  const report = JSON.parse(run.stdout) as {
    items: { id: string; verdict: string; detail: string }[];
  };
  return new Map(report.items.map((item) => [item.id, item]));
}

async function withArcMachine(
  options: Parameters<typeof arcMachine>[0],
  body: (arc: ArcMachine) => Promise<void>,
): Promise<void> {
  const arc = await arcMachine(options);
  try {
    await body(arc);
    // Nothing ever asked 169.254.169.254: Arc is decided locally and its metadata is HIMDS's.
    const imds = await arc.vm.world.imdsRequests();
    assert.deepEqual(
      imds.map((request) => request.url),
      [],
      'no request to 169.254.169.254 on an Arc machine',
    );
  } finally {
    await arc.vm.close();
  }
}

/** Neither the key file's content nor the token is in any file the handler wrote, or its output. */
async function assertNoSecrets(arc: ArcMachine, runs: readonly CommandRun[]): Promise<void> {
  for (const [what, value] of [
    ['the HIMDS key', arc.key],
    ['the token', arc.token],
    ["the token's signature", arc.token.split('.')[2] ?? arc.token],
  ] as const) {
    const files = (await filesContaining(arc.handlerFiles(), value)).filter(
      (file) => file !== arc.vm.root.path(REALM),
    );
    assert.deepEqual(files, [], `${what} appears in ${files.join(', ')}`);
    for (const run of runs) {
      assert.ok(!run.stdout.includes(value) && !run.stderr.includes(value), `${what} in output`);
    }
  }
}

describe('AADSSHLoginForLinux on an Azure Arc-enabled server', () => {
  test('install and enable with the mirror succeed through HIMDS; the log and status say Arc; no secret is written', async () => {
    await withArcMachine({}, async (arc) => {
      const himds = await startHimds(arc.vm.world, {
        realm: REALM,
        key: arc.key,
        token: arc.token,
      });
      try {
        const install = await arc.run('install');
        assertExit(install, 0);
        const status = await arc.status();
        assert.equal(status.status, 'success');
        assert.match(status.message, /the Azure Arc-enabled server passed the checks/);
        const enable = await arc.run('enable');
        assertExit(enable, 0);

        const installed = await arc.vm.world.exec(['dpkg-query', '-W', 'aadsshlogin']);
        assert.equal(installed.exitCode, 0, 'aadsshlogin is installed');

        const lines = await arc.logLines();
        assert.ok(
          lines.some((line) => /^Machine: Azure Arc-enabled server/.test(line.message ?? '')),
          'the log names the machine kind',
        );
        assert.ok(
          lines.some((line) =>
            /sequenceNumberFrom="newest settings file"/.test(line.message ?? ''),
          ),
          'the sequence number came from the settings file: no ConfigSequenceNumber on Arc',
        );
        assert.ok(
          lines.some((line) =>
            /identity is present \(HIMDS at 127\.0\.0\.1:40342/.test(line.message ?? ''),
          ),
          'the identity came from HIMDS',
        );

        const requests = await himds.requests();
        const tokenRequests = requests.filter((request) => request.url.includes('/oauth2/token'));
        assert.deepEqual(
          tokenRequests.map((request) => [request.status, request.headers.authorization]),
          [
            [401, undefined],
            [200, `Basic ${arc.key}`],
          ],
          'one challenge, answered with the key',
        );
        assert.ok(
          tokenRequests.every((request) =>
            request.url.includes('resource=ce6ff14a-7fdc-4685-bbe0-f6afdfcfa8e0'),
          ),
        );
        assert.ok(
          requests.some((request) =>
            request.url.startsWith('/metadata/instance?api-version=2019-11-01'),
          ),
        );
        assert.ok(requests.every((request) => request.headers.metadata === 'true'));
        const items = await diagnoseItems(arc);
        assert.match(items.get('machine-kind')?.detail ?? '', /^Azure Arc-enabled server: /);
        assert.equal(
          items.get('himds-identity')?.verdict,
          'ok',
          items.get('himds-identity')?.detail,
        );
        assert.equal(items.has('imds-identity'), false, 'diagnose does not ask IMDS on Arc');
        await assertNoSecrets(arc, [install, enable]);
      } finally {
        await himds.close();
      }
    });
  });

  test('a key file that is a symlink, outside the tokens folder, or 5 KB is refused; a 401 without a realm fails clearly; HIMDS down is code 35', async () => {
    await withArcMachine({}, async (arc) => {
      const runs: CommandRun[] = [];
      const refused = async (realm: string | null, message: RegExp) => {
        const himds = await startHimds(arc.vm.world, { realm, key: arc.key, token: arc.token });
        try {
          const install = await arc.run('install');
          runs.push(install);
          assertExit(install, 35);
          assert.match(install.stdout, message);
          assert.match(install.stdout, /azcmagent show/);
          const status = await arc.status();
          assert.equal(status.code, 35);
          assert.match(status.message, message);
          const sent = (await himds.requests()).filter((request) => request.headers.authorization);
          assert.deepEqual(sent, [], 'no key was sent');
        } finally {
          await himds.close();
        }
      };
      // A symlink in the tokens folder (to the real key, even): never followed.
      await fs.symlink(REALM, arc.vm.root.path(`${TOKENS_FOLDER}/link.key`));
      await refused(
        `${TOKENS_FOLDER}/link.key`,
        /link\.key", which is a symbolic link: it was not read/,
      );
      // A file outside the tokens folder.
      await arc.vm.root.writeFile('/var/opt/azcmagent/other.key', arc.key, 0o600);
      await refused(
        '/var/opt/azcmagent/other.key',
        /which is not directly in \/var\/opt\/azcmagent\/tokens: it was not read/,
      );
      // 5 KB.
      await arc.vm.root.writeFile(`${TOKENS_FOLDER}/big.key`, 'k'.repeat(5 * 1024), 0o600);
      await refused(`${TOKENS_FOLDER}/big.key`, /big\.key", which is larger than 4096 bytes/);
      // 401 without WWW-Authenticate.
      await refused(null, /HIMDS answered 401 without naming a key file/);

      // HIMDS down: nothing listens on 127.0.0.1:40342.
      const down = await arc.run('install');
      runs.push(down);
      assertExit(down, 35);
      assert.match(down.stdout, /HIMDS \(127\.0\.0\.1:40342\).*ECONNREFUSED/);
      assert.match(down.stdout, /azcmagent show/);
      assert.doesNotMatch(down.stdout, /no system-assigned managed identity/i);
      const himdsItem = (await diagnoseItems(arc)).get('himds-identity');
      assert.equal(himdsItem?.verdict, 'problem');
      assert.match(himdsItem?.detail ?? '', /HIMDS did not answer: .*ECONNREFUSED/);
      const installed = await arc.vm.world.exec(['dpkg-query', '-W', 'aadsshlogin']);
      assert.notEqual(installed.exitCode, 0, 'nothing was installed');
      await assertNoSecrets(arc, runs);
    });
  });

  test("proxy.url of the agent's localconfig.json carries the repository traffic; HIMDS is never proxied", async () => {
    let mirror: Awaited<ReturnType<typeof serveRepository>> | undefined;
    await withArcMachine(
      {
        proxy: true,
        // The mirror on 127.0.0.2: 127.0.0.1 and localhost are never proxied on Arc.
        publicSettings: async (vm) => {
          mirror = await serveRepository(vm.repository.root, {
            launcher: vm.world.wrapOutside,
            host: '127.0.0.2',
          });
          return { repository: { ...vm.publicSettings.repository, baseUrl: mirror.url } };
        },
      },
      async (arc) => {
        const proxyUrl = arc.vm.world.proxyUrl ?? '';
        await arc.vm.root.writeFile(
          '/var/opt/azcmagent/localconfig.json',
          `${JSON.stringify({ 'proxy.url': proxyUrl, 'proxy.bypass': ['ARM'], 'extensions.allowlist': 'Microsoft.Azure.ActiveDirectory/AADSSHLoginForLinux' }, null, 2)}\n`,
        );
        const himds = await startHimds(arc.vm.world, {
          realm: REALM,
          key: arc.key,
          token: arc.token,
        });
        try {
          const install = await arc.run('install');
          assertExit(install, 0);
          const proxied = (await arc.vm.world.proxyRequests()).map((request) => request.url);
          assert.ok(
            proxied.some((url) => url.includes('127.0.0.2') && url.includes('/keys/')),
            `the handler's key download went through the proxy: ${proxied.join(', ')}`,
          );
          assert.ok(
            proxied.some((url) => url.includes('127.0.0.2') && url.includes('/repos/')),
            `apt went through the proxy: ${proxied.join(', ')}`,
          );
          assert.ok(
            proxied.every((url) => !url.includes('40342') && !url.includes('169.254.169.254')),
            `HIMDS and IMDS never went through the proxy: ${proxied.join(', ')}`,
          );
          assert.ok((await himds.requests()).length > 0, 'HIMDS was asked directly');
          const lines = await arc.logLines();
          assert.ok(
            lines.some((line) =>
              /^Proxy on Azure Arc: proxy\.url of \/var\/opt\/azcmagent\/localconfig\.json/.test(
                line.message ?? '',
              ),
            ),
            'the log says where the proxy came from',
          );
          await assertNoSecrets(arc, [install]);
        } finally {
          await himds.close();
          await mirror?.close();
        }
      },
    );
  });

  test("a failed auto-upgrade: the older version reinstalled over the newer one's state converges, logging in its own folder", async () => {
    const next = await buildNextVersion();
    try {
      await withArcMachine({}, async (arc) => {
        const himds = await startHimds(arc.vm.world, {
          realm: REALM,
          key: arc.key,
          token: arc.token,
        });
        try {
          const newer = await arc.unpack(next.zip, next.version);
          assertExit(await newer.run('install'), 0);
          assertExit(await newer.run('enable'), 0);
          assert.equal((await arc.vm.sandbox.readState())?.owner, next.version);
          const newerLog = await newer.logLines();

          // Arc "reinstalls the last known good version": its install and enable, over that state.
          const install = await arc.run('install');
          assertExit(install, 0);
          assert.match((await arc.status()).message, /nothing needed changing/);
          assertExit(await arc.run('enable'), 0);
          const state = await arc.vm.sandbox.readState();
          assert.equal(state?.owner, version, 'the reinstalled version owns the installation');
          assert.deepEqual(state?.journal, []);
          const installed = await arc.vm.world.exec(['dpkg-query', '-W', 'aadsshlogin']);
          assert.equal(installed.exitCode, 0, 'aadsshlogin stayed installed');
          // Each version logs into its own folder; the newer one's was left as it was.
          assert.ok((await arc.logLines()).some((line) => line.operation === 'install'));
          assert.deepEqual(await newer.logLines(), newerLog);
        } finally {
          await himds.close();
        }
      });
    } finally {
      await fs.rm(next.copy, { recursive: true, force: true });
    }
  });
});
