/**
 * `npm run demo`: the built AADSSHLoginForLinux zip installed and enabled by the real guest agent,
 * with no Azure and no internet, then a short account of what happened.
 *
 * 1. Installs what it needs from Debian's packages (as `npm test` does), and builds the zips
 *    (`npm run package`).
 * 2. Starts the sandbox of the end-to-end tests (test/package/agent-vm.ts): a throwaway Debian 12
 *    VM root with Debian's waagent 2.7.3.0 in it, chrooted in its own mount, PID and network
 *    namespaces, where IMDS answers on 169.254.169.254 (the VM has a system-assigned identity), a
 *    fake WireServer on 127.0.0.16 and a packages.microsoft.com stand-in serving signed
 *    stand-in packages.
 * 3. Publishes a goal state asking for the extension, starts `waagent -run-exthandlers`, and waits
 *    until the status the agent uploads says the extension is enabled.
 * 4. Prints each command the agent ran (exit code, duration), the status it uploaded, and what
 *    changed on the VM; then removes everything (also on Ctrl-C or failure).
 *
 * Run as root on Debian 12 (the sandbox needs namespaces and chroot). The first run also builds
 * the cached VM root (debootstrap, about two minutes); later runs take about half a minute.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  extensionVersionOf,
  LINUX_HANDLER_NAME,
  requireZip,
} from '../test/package/agent-driver.js';
import {
  type AgentCommand,
  type AgentVm,
  agentVm,
  dpkgPackages,
  handlerIn,
  type UploadedStatus,
} from '../test/package/agent-vm.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * The machine's Debian packages the sandbox uses: debootstrap (the VM root, on the first run),
 * util-linux (unshare, nsenter, setpriv), iproute2 (the addresses in the VM's network namespace),
 * gpg, gpg-agent and apt-utils (the signed stand-in repository).
 */
const DEBIAN_PACKAGES = ['debootstrap', 'util-linux', 'iproute2', 'gpg', 'gpg-agent', 'apt-utils'];

/** The folders of the VM compared before and after, to show what the extension changed. */
const WATCHED_FOLDERS = ['/etc', '/usr/share/keyrings', '/usr/sbin'];

const started = performance.now();
const seconds = (from: number) => `${((performance.now() - from) / 1000).toFixed(1)} s`;
const say = (line = '') => process.stdout.write(`${line}\n`);

/** Runs `what`, printing `label … <result> (<time>)` on one line. */
async function step<T>(label: string, what: () => Promise<T>, result?: (value: T) => string) {
  process.stdout.write(`▸ ${label} … `);
  const from = performance.now();
  const value = await what();
  say(`${result ? `${result(value)} ` : ''}(${seconds(from)})`);
  return value;
}

function installDebianPackages(): void {
  const missing = DEBIAN_PACKAGES.filter((name) => {
    try {
      // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's format syntax
      const status = execFileSync('dpkg-query', ['-W', '-f=${Status}', name], {
        stdio: ['ignore', 'pipe', 'ignore'],
      }).toString();
      return !status.includes('install ok installed');
    } catch {
      return true;
    }
  });
  if (missing.length === 0) return;
  say(`▸ Installing ${missing.join(' ')} from Debian's packages`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env,
  });
}

/** `npm run package`, its output kept unless it fails. */
async function buildZip(): Promise<string> {
  try {
    execFileSync('npm', ['run', 'package'], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    const failure = error as { stdout?: Buffer; stderr?: Buffer };
    process.stderr.write(`${failure.stdout ?? ''}${failure.stderr ?? ''}`);
    throw new Error('npm run package failed');
  }
  return requireZip(LINUX_HANDLER_NAME, root);
}

/** Each file below the watched folders of the VM: its path and a digest of what it is. */
async function snapshot(vm: AgentVm): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  const walk = async (inVm: string): Promise<void> => {
    const onMachine = vm.vm.root.path(inVm);
    const stat = await fs.lstat(onMachine).catch(() => undefined);
    if (!stat) return;
    if (stat.isDirectory()) {
      for (const entry of await fs.readdir(onMachine)) await walk(path.posix.join(inVm, entry));
    } else if (stat.isSymbolicLink()) {
      files.set(inVm, `-> ${await fs.readlink(onMachine)}`);
    } else if (stat.isFile()) {
      const digest = createHash('sha256')
        .update(await fs.readFile(onMachine))
        .digest('hex');
      files.set(inVm, `${stat.mode.toString(8)} ${digest}`);
    }
  };
  for (const folder of WATCHED_FOLDERS) await walk(folder);
  return files;
}

/** Files added, changed and removed between two snapshots. */
function fileChanges(before: Map<string, string>, after: Map<string, string>) {
  const added = [...after.keys()].filter((file) => !before.has(file));
  const changed = [...after.keys()].filter(
    (file) => before.has(file) && before.get(file) !== after.get(file),
  );
  const removed = [...before.keys()].filter((file) => !after.has(file));
  return { added, changed, removed };
}

/** `text` on lines of at most `width` characters, broken between words. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter((part) => part !== '')) {
    if (line !== '' && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  if (line !== '') lines.push(line);
  return lines;
}

/** Prints `label` then `text` wrapped, its following lines indented under the first. */
function sayWrapped(label: string, text: string, width = 100): void {
  const [first = '', ...rest] = wrap(text, width - label.length);
  say(`${label}${first}`);
  for (const line of rest) say(`${' '.repeat(label.length)}${line}`);
}

function printCommands(commands: readonly AgentCommand[]): void {
  say();
  say('Commands the agent ran (its CommandExecution.log and waagent.log)');
  for (const command of commands) {
    const duration =
      command.durationMs === undefined ? '' : `${(command.durationMs / 1000).toFixed(1)} s`;
    say(
      `  ${command.handlerVersion}  ${command.operation.padEnd(9)} seq ${command.sequenceNumber}  exit ${command.exitCode ?? '?'}  ${duration.padStart(6)}`,
    );
  }
  say("  (durations as the agent logged them, including the agent's 1 s pause after each command)");
}

function printStatus(blob: UploadedStatus, number: number): void {
  const handler = handlerIn(blob);
  const agent = blob.aggregateStatus.guestAgentStatus;
  say();
  say(`Status the agent uploaded (status blob ${number})`);
  say(`  agent      ${agent.version}: ${agent.status}`);
  if (!handler) {
    say('  handler    (none)');
    return;
  }
  sayWrapped(
    '  handler    ',
    `${handler.handlerVersion} ${handler.status}, code ${handler.code ?? 0}: ${handler.formattedMessage?.message ?? ''}`,
  );
  const runtime = handler.runtimeSettingsStatus;
  if (!runtime) {
    say('  extension  (no status: the agent reports one only once the install succeeded)');
    return;
  }
  const status = runtime.settingsStatus.status;
  sayWrapped(
    '  extension  ',
    `${status.status}, code ${status.code}, ${status.operation ?? '?'} of sequence number ${runtime.sequenceNumber}: ${status.formattedMessage?.message ?? ''}`,
  );
  for (const entry of status.substatus ?? []) {
    sayWrapped(
      `    ${entry.name.padEnd(16)} ${entry.status.padEnd(8)} `,
      entry.formattedMessage?.message ?? '',
    );
  }
}

function printChanges(
  packagesBefore: Map<string, { version: string }>,
  packagesAfter: Map<string, { status: string; version: string }>,
  files: { added: string[]; changed: string[]; removed: string[] },
): void {
  say();
  say(`What changed on the VM (packages, and files in ${WATCHED_FOLDERS.join(', ')})`);
  const installed = [...packagesAfter]
    .filter(([name, known]) => known.status === 'installed' && !packagesBefore.has(name))
    .map(([name, known]) => `${name} ${known.version}`);
  say(`  packages installed  ${installed.join(', ') || 'none'}`);
  const list = (label: string, entries: string[]) => {
    say(`  ${label.padEnd(18)}  ${entries[0] ?? 'none'}`);
    for (const entry of entries.slice(1)) say(`  ${''.padEnd(18)}  ${entry}`);
  };
  list('files added', files.added);
  list('files changed', files.changed);
  if (files.removed.length > 0) list('files removed', files.removed);
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new Error('run the demo as root: the sandbox uses namespaces, mounts and chroot');
  }
  say('AADSSHLoginForLinux, installed by the real guest agent in a sandboxed VM');
  say();
  installDebianPackages();
  const zip = await step('Building the zips (npm run package)', buildZip, (file) =>
    path.relative(root, file),
  );
  const version = extensionVersionOf(root);

  let vm: AgentVm | undefined;
  const cleanUp = async () => {
    const running = vm;
    vm = undefined;
    await running?.close();
  };
  process.once('SIGINT', () => {
    say('\ninterrupted: cleaning up');
    void cleanUp().finally(() => process.exit(130));
  });
  try {
    vm = await step(
      'Starting the sandbox: Debian 12 VM root, fake WireServer, IMDS, repository stand-in',
      () => agentVm({ label: 'demo' }),
      (made) => made.agent.label,
    );
    const running = vm;
    await running.addPackage(version, zip);
    const packagesBefore = await dpkgPackages(running.vm);
    const filesBefore = await snapshot(running);
    const incarnation = await running.publish({
      version,
      state: 'enabled',
      settings: { seqNo: 0, publicSettings: running.publicSettings },
    });
    say(
      `▸ Goal state ${incarnation}: ${LINUX_HANDLER_NAME} ${version}, enabled, public settings ${JSON.stringify(running.publicSettings)}`,
    );
    const upload = await step(
      'Starting the agent (waagent -run-exthandlers) and waiting for the extension',
      async () => {
        await running.startAgent();
        return running.waitForStatus(
          'the extension enabled, or failed',
          (blob) => {
            const handler = handlerIn(blob);
            return handler?.status === 'NotReady' || handler?.status === 'Ready';
          },
          { incarnation },
        );
      },
      (found) => handlerIn(found.blob)?.status ?? '',
    );
    const commands = await running.commands();
    const packagesAfter = await dpkgPackages(running.vm);
    const filesAfter = await snapshot(running);

    printCommands(commands);
    printStatus(upload.blob, upload.number);
    printChanges(packagesBefore, packagesAfter, fileChanges(filesBefore, filesAfter));
    say();
  } finally {
    await step('Cleaning up: agent, namespaces, servers, VM root', cleanUp);
  }
  say(`Done in ${seconds(started)}.`);
}

try {
  await main();
} catch (error) {
  process.stderr.write(`demo failed: ${error instanceof Error ? error.message : error}\n`);
  process.exitCode = 1;
}
