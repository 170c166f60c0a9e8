import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { failureKinds } from '../../src/failures.js';
import type { Imds } from '../../src/io/imds.js';
import {
  type DiagnoseHost,
  diskItems,
  imdsItems,
  noexecItem,
  packageItems,
  parseMountinfo,
  proxyItem,
} from '../../src/linux/diagnose/items.js';
import {
  bypassesProxy,
  findAgentProxy,
  isAgentCommandLine,
  parseAgentConfProxy,
  parseUnitEnvironment,
} from '../../src/linux/diagnose/proxy.js';
import {
  buildReport,
  DIAGNOSE_PROBLEMS_EXIT_CODE,
  renderText,
  reportSchema,
} from '../../src/linux/diagnose/report.js';
import type { Machine } from '../../src/linux/machine.js';
import { fakeProcesses, memoryFiles } from '../fakes.js';

const MOUNTINFO = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 8:2 / /var rw,nosuid,nodev,noexec,relatime shared:2 - ext4 /dev/sda2 rw
31 30 8:3 / /var/lib/waagent rw,relatime shared:3 - ext4 /dev/sda3 rw
32 22 0:40 / /tmp rw,nosuid,nodev,noexec shared:4 - tmpfs tmpfs rw
33 22 0:41 / /mnt/with\\040space rw shared:5 - tmpfs tmpfs rw
`;

/** A host whose files are `files`; the rest of it is never asked by the items tested here. */
function hostWith(files: Record<string, string>, extra: Partial<DiagnoseHost> = {}): DiagnoseHost {
  const machine = {
    readFile: async (file: string) =>
      files[file] === undefined ? undefined : Buffer.from(files[file]),
  } as unknown as Machine;
  return {
    machine,
    imds: { get: async () => ({ status: 500, body: '', retryAfterMs: undefined }) },
    architecture: 'x86_64',
    handlerDir: '/var/lib/waagent/Microsoft.Azure.ActiveDirectory.AADSSHLoginForLinux-1.0.0.0',
    statfs: async () => undefined,
    reach: async () => undefined,
    timeoutMs: 1000,
    ...extra,
  };
}

describe('diagnose: the agent proxy', () => {
  test('systemd Environment= lines, quoted or not; waagent.conf HttpProxy; the agent command line', () => {
    assert.deepEqual(
      parseUnitEnvironment(
        '[Service]\nEnvironment="http_proxy=http://p:3128" "no_proxy=169.254.169.254,.internal"\nEnvironment=HTTPS_PROXY=http://q:8080\n',
      ),
      {
        http_proxy: 'http://p:3128',
        no_proxy: '169.254.169.254,.internal',
        HTTPS_PROXY: 'http://q:8080',
      },
    );
    assert.equal(parseAgentConfProxy('HttpProxy.Host=proxy\nHttpProxy.Port=3128\n'), 'proxy:3128');
    assert.equal(parseAgentConfProxy('HttpProxy.Host=None\nHttpProxy.Port=None\n'), undefined);
    assert.equal(parseAgentConfProxy('# HttpProxy.Host=proxy\n'), undefined);
    assert.ok(isAgentCommandLine('/usr/bin/python3\0-u\0/usr/sbin/waagent\0-daemon\0'));
    assert.ok(
      isAgentCommandLine('python3\0-u\0bin/WALinuxAgent-2.9.1.1-py3.8.egg\0-run-exthandlers\0'),
    );
    assert.ok(
      !isAgentCommandLine(
        '/var/lib/waagent/Microsoft.Azure.ActiveDirectory.AADSSHLoginForLinux-1.0.0.0/handler/aadsshlogin-handler.sh\0diagnose\0',
      ),
    );
  });

  test('no_proxy: exact names, domain suffixes, ports and *', () => {
    assert.ok(bypassesProxy('localhost,169.254.169.254', '169.254.169.254'));
    assert.ok(bypassesProxy('.windows.net', 'pas.windows.net'));
    assert.ok(bypassesProxy('windows.net:443', 'pas.windows.net'));
    assert.ok(bypassesProxy('*', 'anything'));
    assert.ok(!bypassesProxy('169.254.169.25', '169.254.169.254'));
    assert.ok(!bypassesProxy(undefined, 'pas.windows.net'));
  });

  test('the running agent wins over the drop-ins; the handler itself is not the agent', async () => {
    const files: Record<string, string> = {
      '/proc/100/cmdline': '/usr/bin/python3\0-u\0/usr/sbin/waagent\0-daemon\0',
      '/proc/100/environ': 'PATH=/usr/bin\0https_proxy=http://running:1\0',
      '/etc/systemd/system/walinuxagent.service.d/p.conf':
        '[Service]\nEnvironment=https_proxy=http://dropin:2\n',
      '/etc/waagent.conf': 'HttpProxy.Host=conf\nHttpProxy.Port=3\n',
    };
    const probe = {
      readText: async (file: string) => files[file],
      listDirectory: async (folder: string) =>
        folder === '/proc'
          ? ['100', 'self']
          : folder.startsWith('/etc/systemd/system/walinuxagent')
            ? ['p.conf']
            : [],
    };
    const running = await findAgentProxy(probe);
    assert.equal(running.environment.https_proxy, 'http://running:1');
    assert.equal(running.source, 'the running guest agent (pid 100)');
    assert.equal(running.agentConf, 'conf:3');
    delete files['/proc/100/cmdline'];
    const dropIn = await findAgentProxy(probe);
    assert.equal(dropIn.environment.HTTPS_PROXY, 'http://dropin:2');
    assert.equal(dropIn.source, '/etc/systemd/system/walinuxagent.service.d/p.conf');
  });

  test('verdicts: none is ok; waagent.conf alone, or no_proxy without IMDS, is a warning', () => {
    assert.equal(
      proxyItem({ environment: {}, source: undefined, agentConf: undefined }).verdict,
      'ok',
    );
    assert.equal(
      proxyItem({ environment: {}, source: undefined, agentConf: 'p:1' }).verdict,
      'warning',
    );
    const environment = { https_proxy: 'http://p:1', no_proxy: '169.254.169.254' };
    assert.equal(proxyItem({ environment, source: 'x', agentConf: undefined }).verdict, 'ok');
    const uncovered = proxyItem({
      environment: { https_proxy: 'http://p:1' },
      source: 'x',
      agentConf: undefined,
    });
    assert.equal(uncovered.verdict, 'warning');
    assert.match(uncovered.remedy ?? '', /no_proxy/);
  });
});

describe('diagnose: items over a fake VM', () => {
  test('mountinfo: escapes decoded; the longest mount point decides', async () => {
    assert.equal(parseMountinfo(MOUNTINFO)[4]?.mountPoint, '/mnt/with space');
    const item = await noexecItem(hostWith({ '/proc/self/mountinfo': MOUNTINFO }));
    // /var is noexec but /var/lib/waagent is its own mount that allows programs; /tmp does not.
    assert.equal(item.verdict, 'warning');
    assert.match(item.detail, /\/tmp/);
    const noexecVar = MOUNTINFO.split('\n')
      .filter((line) => !line.startsWith('31 '))
      .join('\n');
    const problem = await noexecItem(hostWith({ '/proc/self/mountinfo': noexecVar }));
    assert.equal(problem.verdict, 'problem');
    assert.match(problem.detail, /\/var\/lib\/waagent/);
  });

  test('disk: free space and inodes against the thresholds; no inode limit is fine', async () => {
    const sizes: Record<string, { freeBytes: number; freeInodes: number; inodes: number }> = {
      '/var': { freeBytes: 50 * 2 ** 20, freeInodes: 100_000, inodes: 200_000 },
      '/usr': { freeBytes: 8 * 2 ** 30, freeInodes: 5_000, inodes: 200_000 },
      '/etc': { freeBytes: 8 * 2 ** 30, freeInodes: 0, inodes: 0 },
    };
    const items = await diskItems(hostWith({}, { statfs: async (folder) => sizes[folder] }));
    assert.deepEqual(
      items.map((item) => [item.id, item.verdict]),
      [
        ['disk:/var', 'problem'],
        ['disk:/usr', 'warning'],
        ['disk:/etc', 'ok'],
      ],
    );
  });

  test('identity: one request; absent, other answers and no answer are problems with their remedy', async () => {
    const answering = (status: number, body: string): Imds => ({
      get: async () => ({ status, body, retryAfterMs: undefined }),
    });
    const ok = await imdsItems(hostWith({}, { imds: answering(200, '{"access_token":"x"}') }));
    assert.equal(ok.items[0]?.verdict, 'ok');
    const absent = await imdsItems(
      hostWith(
        {},
        {
          imds: answering(
            400,
            '{"error":"invalid_request","error_description":"Identity not found"}',
          ),
        },
      ),
    );
    assert.equal(absent.items[0]?.verdict, 'problem');
    assert.equal(absent.items[0]?.remedy, failureKinds.noSystemAssignedIdentity.remedy);
    const silent = await imdsItems(
      hostWith({}, { imds: { get: async () => Promise.reject(new Error('timed out')) } }),
    );
    assert.equal(silent.items[0]?.remedy, failureKinds.imdsUnreachable.remedy);
  });
});

/** An installed aadsshlogin whose files register it, and `sshd -T` answering `sshdT`. */
function installedHost(sshdT: { exitCode: number; stdout?: string; stderr?: string }) {
  const files = new Map(
    Object.entries({
      '/etc/ssh/sshd_config':
        'UsePAM yes\nMatch User *@*\n    AuthorizedKeysCommand /usr/sbin/aad_certhandler %u %k\n',
      '/etc/nsswitch.conf': 'passwd: files aad\ngroup: files aad\n',
      '/etc/pam.d/sshd': 'account required pam_aad.so\n',
    }).map(([file, text]) => [file, Buffer.from(text)]),
  );
  const processes = fakeProcesses((file, args) => {
    if (file === 'dpkg-query')
      return args.includes('aadsshlogin')
        ? { stdout: 'install ok installed 1.0.1' }
        : { exitCode: 1 };
    if (file === 'sshd') return sshdT;
    return { exitCode: file === 'rpm' ? 1 : 0 };
  });
  const machine = { ...memoryFiles(files), processes } as unknown as Machine;
  return { host: hostWith({}, { machine }), processes };
}

describe("diagnose: sshd's effective configuration", () => {
  test('sshd -T for an Entra ID user decides the sshd registration, and its AllowGroups warns', async () => {
    const { host, processes } = installedHost({
      exitCode: 0,
      stdout:
        'usepam yes\nauthorizedkeyscommand /usr/sbin/aad_certhandler %u %k\nallowgroups admins\n',
    });
    const items = await packageItems(host);
    const sshd = items.find((item) => item.id === 'registration:sshd');
    assert.equal(sshd?.verdict, 'ok');
    assert.match(sshd?.detail ?? '', /effective configuration for an Entra ID user/);
    const settings = items.find((item) => item.id === 'sshd-settings');
    assert.equal(settings?.verdict, 'warning');
    assert.match(settings?.detail ?? '', /sets AllowGroups admins/);
    assert.deepEqual(processes.calls.find((call) => call.file === 'sshd')?.args, [
      '-T',
      '-C',
      'user=diagnose@contoso.com,host=localhost,addr=127.0.0.1',
    ]);
  });

  test('an earlier setting that wins over the Match block is a problem even when the files have it', async () => {
    const { host } = installedHost({ exitCode: 0, stdout: 'authorizedkeyscommand none\n' });
    const sshd = (await packageItems(host)).find((item) => item.id === 'registration:sshd');
    assert.equal(sshd?.verdict, 'problem');
    assert.match(sshd?.detail ?? '', /has AuthorizedKeysCommand none/);
  });

  test('without sshd the files decide, and the item says so', async () => {
    const { host } = installedHost({ exitCode: 127 });
    const items = await packageItems(host);
    assert.deepEqual(
      items.map((item) => [item.id, item.verdict]),
      [
        ['aadsshlogin', 'ok'],
        ['registration:sshd', 'ok'],
        ['registration:nsswitch', 'ok'],
        ['registration:pam', 'ok'],
        ['sshd-settings', 'ok'],
      ],
    );
    assert.match(items[1]?.detail ?? '', /sshd is not installed/);
  });
});

describe('diagnose: the report', () => {
  test('exit code 29 only with a problem, never a lifecycle code; the schema accepts what is built', () => {
    assert.ok(
      !Object.values(failureKinds)
        .map((kind): number => kind.code)
        .includes(DIAGNOSE_PROBLEMS_EXIT_CODE),
    );
    const now = new Date('2026-01-01T00:00:00Z');
    const warning = buildReport({
      handler: 'H',
      version: '1.0.0.0',
      now,
      items: [{ id: 'a', title: 'A', verdict: 'warning', detail: 'd', remedy: 'r' }],
    });
    assert.equal(warning.exitCode, 0);
    reportSchema.parse(warning);
    const problem = buildReport({
      handler: 'H',
      version: '1.0.0.0',
      now,
      items: [{ id: 'a', title: 'A', verdict: 'problem', detail: 'd', remedy: 'r' }],
    });
    assert.equal(reportSchema.parse(problem).exitCode, DIAGNOSE_PROBLEMS_EXIT_CODE);
    assert.match(renderText(problem), /^\[PROBLEM\] A: d\n {10}Remedy: r$/m);
    assert.match(renderText(problem), /0 ok, 0 warnings, 1 problem\. Exit code 29/);
  });
});
