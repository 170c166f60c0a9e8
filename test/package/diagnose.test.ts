/**
 * `aadsshlogin-handler.sh diagnose [--json]` of the built AADSSHLoginForLinux zip, run as an
 * administrator runs it (the handler's own script, chrooted in a throwaway test VM, vm.ts): the
 * verdict of each item on a healthy VM and on VMs with one thing wrong, the JSON report validated
 * against its schema, and that diagnose changed nothing. Assumes `npm run package` ran.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import {
  DIAGNOSE_PROBLEMS_EXIT_CODE,
  type Report,
  reportSchema,
} from '../../src/linux/diagnose/report.js';
import {
  AGENT_PATH,
  assertExit,
  extensionVersionOf,
  type HandlerInstance,
  LINUX_HANDLER_NAME,
  PYTHON,
  requireZip,
  stopChild,
} from './agent-driver.js';
import { type LinuxVm, linuxVm, unpackHandler, withLinuxVm, withSelinuxPolicy } from './vm.js';
import { IDENTITY_NOT_FOUND, TOKEN_PATH } from './world.js';

const version = extensionVersionOf();
let zip = '';

before(async () => {
  zip = await requireZip(LINUX_HANDLER_NAME);
});

/** The cloud endpoints diagnose connects to (AzurePublicCloud: the mock IMDS names no cloud). */
const ENDPOINTS = ['login.microsoftonline.com', 'pas.windows.net'];

/** Unpacks the zip into the VM's agent folder with settings for sequence number 0. */
function handlerIn(vm: LinuxVm): Promise<HandlerInstance> {
  return unpackHandler(vm, zip, version);
}

/**
 * The test VMs share this machine's process table: a guest agent another test runs is as visible
 * in the VM's /proc as the VM's own would be. `alone` runs diagnose in a PID namespace of its own
 * (a fresh /proc showing only itself), for the scenarios where the VM has no running agent.
 */
interface DiagnoseOptions {
  alone?: boolean;
}

/** Runs the documented command line inside the VM, as root with the agent's PATH. */
async function diagnose(
  vm: LinuxVm,
  handler: HandlerInstance,
  args: readonly string[] = [],
  options: DiagnoseOptions = {},
) {
  const command = [`${handler.dir}/handler/aadsshlogin-handler.sh`, 'diagnose', ...args];
  const isolated = options.alone
    ? ['unshare', '--pid', '--fork', '--mount-proc', '--propagation', 'unchanged']
    : [];
  return vm.world.exec([...isolated, ...command], { timeoutMs: 60_000 });
}

/** `diagnose --json`, its report validated by the schema, and its exit code the report's. */
async function diagnoseJson(
  vm: LinuxVm,
  handler: HandlerInstance,
  options: DiagnoseOptions = {},
): Promise<Report> {
  const run = await diagnose(vm, handler, ['--json'], options);
  assert.ok(
    run.stdout.trim(),
    `diagnose --json printed nothing (exit ${run.exitCode}): ${run.stderr}`,
  );
  const report = reportSchema.parse(JSON.parse(run.stdout));
  assert.equal(run.exitCode, report.exitCode, run.stderr);
  assert.equal(report.exitCode, report.summary.problem > 0 ? DIAGNOSE_PROBLEMS_EXIT_CODE : 0);
  return report;
}

function item(report: Report, id: string) {
  const found = report.items.find((candidate) => candidate.id === id);
  assert.ok(found, `item ${id} in ${report.items.map((entry) => entry.id).join(', ')}`);
  return found;
}

function notOk(report: Report): string[] {
  return report.items
    .filter((entry) => entry.verdict !== 'ok')
    .map((entry) => `${entry.id} ${entry.verdict}: ${entry.detail}`);
}

/**
 * Every file under the VM's /etc, its package database and the agent's folders (the handler's
 * status, state and log files), with size and modification time: what "changed nothing" compares.
 */
async function snapshot(vm: LinuxVm): Promise<string> {
  const run = await vm.world.exec([
    'sh',
    '-c',
    `find /etc /var/lib/dpkg /var/lib/apt ${vm.sandbox.root} \\( -type f -o -type l \\) -printf '%p %s %T@\\n' | sort`,
  ]);
  assert.equal(run.exitCode, 0, run.stderr);
  return run.stdout;
}

/**
 * Makes the cloud's endpoints reachable on TCP 443 inside the world: their names on the VM's
 * loopback (/etc/hosts) and a listener there that accepts connections, as a firewall that lets
 * them through would.
 */
async function serveEndpoints(vm: LinuxVm): Promise<() => Promise<void>> {
  const hosts = (await vm.root.readFile('/etc/hosts')) ?? '';
  await vm.root.writeFile('/etc/hosts', `${hosts}127.0.0.1 ${ENDPOINTS.join(' ')}\n`);
  const script =
    "require('net').createServer((s) => s.end()).listen(443, '127.0.0.1', () => console.log('ready'))";
  const [file, ...args] = vm.world.wrapOutside([process.execPath, '-e', script], '/');
  const child: ChildProcess = spawn(file ?? 'nsenter', args, {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the endpoint listener exited (${code})`)));
    if (!child.stdout) return reject(new Error('no stdout'));
    createInterface({ input: child.stdout }).once('line', () => resolve());
  });
  return () => stopChild(child);
}

/** A host process holding dpkg's frontend lock as apt does, named `unattended-upgr`. */
async function holdDpkgLock(vm: LinuxVm): Promise<{ pid: number; release(): Promise<void> }> {
  const script = [
    'import ctypes, fcntl, sys, time',
    "ctypes.CDLL(None).prctl(15, b'unattended-upgr', 0, 0, 0)",
    "f = open(sys.argv[1], 'a')",
    'fcntl.lockf(f, fcntl.LOCK_EX)',
    "print('locked', flush=True)",
    'time.sleep(3600)',
  ].join('\n');
  const child = spawn(PYTHON, ['-c', script, vm.root.path('/var/lib/dpkg/lock-frontend')], {
    env: { PATH: AGENT_PATH },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`the lock holder exited (${code})`)));
    if (!child.stdout) return reject(new Error('no stdout'));
    createInterface({ input: child.stdout }).once('line', () => resolve());
  });
  return { pid: child.pid ?? 0, release: () => stopChild(child) };
}

describe('diagnose on an installed Debian 12 VM', () => {
  let vm: LinuxVm;
  let handler: HandlerInstance;
  let stopEndpoints: () => Promise<void> = async () => undefined;

  before(async () => {
    vm = await linuxVm({ kind: 'debian', label: 'diagnose' });
    stopEndpoints = await serveEndpoints(vm);
    handler = await handlerIn(vm);
    assertExit(await handler.run('install', { seq: 0 }), 0);
  });
  after(async () => {
    await stopEndpoints();
    await vm?.close();
  });

  test('healthy: every item ok, exit 0, in text and JSON; nothing on the VM changed', async () => {
    const before = await snapshot(vm);
    const report = await diagnoseJson(vm, handler, { alone: true });
    assert.deepEqual(notOk(report), []);
    assert.equal(report.exitCode, 0);
    for (const id of [
      'os',
      'architecture',
      'memory',
      'disk:/var',
      'disk:/usr',
      'disk:/etc',
      'noexec',
      'package-locks',
      'cloud-init',
      'imds-identity',
      'proxy',
      'reach:repository',
      'reach:sign-in',
      'reach:rbac',
      'selinux-mode',
      'fips',
      'legacy',
      'aadsshlogin',
      'registration:sshd',
      'registration:nsswitch',
      'registration:pam',
      'sshd-settings',
    ]) {
      item(report, id);
    }
    assert.match(item(report, 'os').detail, /Debian GNU\/Linux 12/);
    assert.match(item(report, 'reach:repository').title, new RegExp(vm.server.url));
    assert.match(item(report, 'aadsshlogin').detail, /aadsshlogin \S+ installed/);

    const text = await diagnose(vm, handler, [], { alone: true });
    assert.equal(text.exitCode, 0, text.stderr);
    assert.match(text.stdout, /^\[ok\] +Distribution: Debian GNU\/Linux 12/m);
    assert.match(text.stdout, /0 warnings, 0 problems\. Exit code 0/);
    assert.equal(await snapshot(vm), before, 'diagnose changed nothing');
  });

  test('AllowGroups outside a Match block: a warning naming it, exit still 0', async () => {
    const sshdConfig = (await vm.root.readFile('/etc/ssh/sshd_config')) ?? '';
    await vm.root.writeFile('/etc/ssh/sshd_config', `AllowGroups admins\n${sshdConfig}`);
    try {
      const report = await diagnoseJson(vm, handler, { alone: true });
      const sshd = item(report, 'sshd-settings');
      assert.equal(sshd.verdict, 'warning');
      assert.match(sshd.detail, /sshd_config line 1 sets AllowGroups outside a Match block/);
      assert.ok(sshd.remedy);
      assert.equal(report.exitCode, 0);
      const text = await diagnose(vm, handler, [], { alone: true });
      assert.match(text.stdout, /^\[WARNING\] +sshd settings: /m);
      assert.match(text.stdout, /^ +Remedy: /m);
    } finally {
      await vm.root.writeFile('/etc/ssh/sshd_config', sshdConfig);
    }
  });

  test("dpkg's lock held: a warning naming the holder", async () => {
    const holder = await holdDpkgLock(vm);
    try {
      const report = await diagnoseJson(vm, handler);
      const locks = item(report, 'package-locks');
      assert.equal(locks.verdict, 'warning');
      assert.match(
        locks.detail,
        new RegExp(`unattended-upgr \\(pid ${holder.pid}\\) holds /var/lib/dpkg/lock-frontend`),
      );
      assert.match(locks.remedy ?? '', new RegExp(`ps -fp ${holder.pid}`));
    } finally {
      await holder.release();
    }
  });
});

test('no system-assigned identity: the identity item is a problem with its remedy, exit 29', async () => {
  await withLinuxVm(
    { kind: 'debian', label: 'diagnose-identity', imds: { [TOKEN_PATH]: [IDENTITY_NOT_FOUND] } },
    async (vm) => {
      const handler = await handlerIn(vm);
      const report = await diagnoseJson(vm, handler, { alone: true });
      const identity = item(report, 'imds-identity');
      assert.equal(identity.verdict, 'problem');
      assert.match(identity.detail, /Identity not found/);
      assert.match(identity.remedy ?? '', /az vm identity assign/);
      assert.equal(report.exitCode, DIAGNOSE_PROBLEMS_EXIT_CODE);
      // Not installed yet: said, not a problem.
      assert.equal(item(report, 'aadsshlogin').verdict, 'warning');
      assert.equal(
        (await vm.world.imdsRequests(TOKEN_PATH)).length,
        1,
        'one identity request, no waiting',
      );
      const text = await diagnose(vm, handler, [], { alone: true });
      assert.equal(text.exitCode, DIAGNOSE_PROBLEMS_EXIT_CODE);
      assert.match(text.stdout, /^\[PROBLEM\] +IMDS .*Identity not found/m);
    },
  );
});

test("a proxy in the agent's service: reported with its drop-in; the repository and the cloud's endpoints are asked through it, IMDS directly", async () => {
  await withLinuxVm({ kind: 'debian', label: 'diagnose-proxy', proxy: true }, async (vm) => {
    const proxyUrl = vm.world.proxyUrl ?? '';
    const dropIn = '/etc/systemd/system/walinuxagent.service.d/http-proxy.conf';
    await vm.root.writeFile(
      dropIn,
      `[Service]\nEnvironment="http_proxy=${proxyUrl}" "https_proxy=${proxyUrl}"\n`,
    );
    const handler = await handlerIn(vm);
    const report = await diagnoseJson(vm, handler, { alone: true });
    const proxy = item(report, 'proxy');
    assert.equal(proxy.verdict, 'warning', 'no_proxy does not cover IMDS');
    assert.match(proxy.detail, new RegExp(`https_proxy=${proxyUrl}`));
    assert.match(proxy.detail, new RegExp(dropIn));
    assert.match(proxy.remedy ?? '', /169\.254\.169\.254/);
    assert.equal(item(report, 'reach:repository').verdict, 'ok');
    assert.equal(item(report, 'imds-identity').verdict, 'ok');
    const through = (await vm.world.proxyRequests()).map((request) => request.url);
    assert.ok(
      through.some((url) => url.startsWith(vm.server.url)),
      `the repository through the proxy: ${through.join(', ')}`,
    );
    for (const endpoint of ENDPOINTS) assert.ok(through.includes(`${endpoint}:443`), endpoint);
    // The world's proxy cannot reach the internet: the endpoints are problems, named as such.
    for (const id of ['reach:sign-in', 'reach:rbac']) {
      assert.equal(item(report, id).verdict, 'problem');
      assert.match(
        item(report, id).detail,
        new RegExp(`the proxy ${proxyUrl.replace('http://', '')} answered`),
      );
    }
    assert.equal(report.exitCode, DIAGNOSE_PROBLEMS_EXIT_CODE);
    assert.ok(!through.some((url) => url.includes('169.254.169.254')), 'IMDS never through it');
    assert.equal((await vm.world.imdsRequests(TOKEN_PATH)).length, 1);
  });
});

test('SELinux policy present: aadsshlogin-selinux installed and its module registered', async () => {
  await withLinuxVm({ kind: 'debian', label: 'diagnose-selinux' }, async (vm) => {
    await withSelinuxPolicy(vm);
    const handler = await handlerIn(vm);
    assertExit(await handler.run('install', { seq: 0 }), 0);
    const report = await diagnoseJson(vm, handler, { alone: true });
    assert.match(item(report, 'aadsshlogin').detail, /and aadsshlogin-selinux \S+ installed/);
    const selinux = item(report, 'registration:selinux');
    assert.equal(selinux.verdict, 'ok');
    assert.match(selinux.detail, /aad_permissions/);
  });
});
