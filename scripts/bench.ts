/**
 * `npm run bench`: measures (never judges) the shipped Linux x64 executable, as docs/performance.md
 * reports it. Whole processes are timed from outside: wall clock around the spawn, peak RSS from
 * GNU time's `%M` (the largest process the command waited for). Ratios are taken pair by pair
 * (A B A B …) within the same run, so that a drifting machine does not skew them.
 *
 *   npm run bench                      # npm run package first
 *   npm run bench -- --reuse-dist      # use dist/ as it is
 *   npm run bench -- --runs 30 --skip-scale
 *
 * 1. Converged re-enable: `enable` with the same sequence number in a Debian 12 test VM (vm.ts) where
 *    everything is installed, run as the agent runs it; against the floor: the handler's
 *    `--version`, started the same way (entry script, runtime settings), plus the one `dpkg-query`
 *    it needs; and against a Bun executable that only prints.
 * 2. Install overhead: the first install and enable in a fresh VM, minus the time the handler's
 *    log records inside package-manager commands.
 * 3. Package sizes (dist/).
 * 4. Scale: 200 handler processes (`install --dry-run` of the built zip, handler-scale.ts) against
 *    one mirror and one IMDS limited to 5 requests/s for all of them; then the mirror simulation
 *    (mirror-simulation.ts), 200 clients doing an AlmaLinux 9 install's repository step at once.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import packageJson from '../package.json' with { type: 'json' };
import {
  AGENT_PATH,
  extensionVersionOf,
  type HandlerInstance,
  LINUX_HANDLER_NAME,
  REPO_ROOT,
  requireZip,
  runTool,
  WINDOWS_HANDLER_NAME,
  zipPathOf,
} from '../test/package/agent-driver.js';
import { runHandlerScaleCommand } from '../test/package/handler-scale.js';
import { describeSimulation, runMirrorSimulation } from '../test/package/mirror-simulation.js';
import { type LinuxVm, linuxVm, unpackHandler } from '../test/package/vm.js';

const args = process.argv.slice(2);
const flag = (name: string) => args.includes(name);
const option = (name: string, fallback: number) => {
  const index = args.indexOf(name);
  return index >= 0 ? Number(args[index + 1]) : fallback;
};
const RUNS = option('--runs', 20);
const TIME = '/usr/bin/time';
/** The runtime dependencies (package.json), each measured alone in the start-up profile. */
const DEPENDENCIES = Object.keys(packageJson.dependencies).sort();

interface Sample {
  wallMs: number;
  rssKiB: number;
  exitCode: number | null;
}

/** Runs `argv` once under GNU time: wall clock in ms and peak RSS in KiB. */
async function timed(
  argv: readonly string[],
  options: { env?: Record<string, string>; cwd?: string } = {},
): Promise<Sample> {
  const out = path.join(os.tmpdir(), `bench-time-${process.pid}-${Math.random()}.txt`);
  const started = performance.now();
  const exitCode = await new Promise<number | null>((resolve, reject) => {
    const child = spawn(TIME, ['-f', '%M', '-o', out, ...argv], {
      stdio: 'ignore',
      env: options.env ?? { PATH: AGENT_PATH },
      cwd: options.cwd ?? '/',
    });
    child.once('error', reject);
    child.once('exit', (code) => resolve(code));
  });
  const wallMs = performance.now() - started;
  const text = await fs.readFile(out, 'utf8').catch(() => '');
  await fs.rm(out, { force: true });
  const rssKiB = Number(text.trim().split('\n').pop());
  return { wallMs, rssKiB, exitCode };
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] ?? 0)
    : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2;
}

/** `median (min–max)` of a list of figures. */
function spread(values: readonly number[], digits = 1): string {
  const f = (v: number) => v.toFixed(digits);
  return `${f(median(values))} (${f(Math.min(...values))}–${f(Math.max(...values))})`;
}

const rows: [string, string][] = [];
function row(name: string, value: string): void {
  rows.push([name, value]);
  process.stdout.write(`${name.padEnd(58)} ${value}\n`);
}

function mib(kib: readonly number[]): number[] {
  return kib.map((k) => k / 1024);
}

/** Compiles `source` into a Bun executable as the Linux handler is built (scripts/package.ts). */
async function bunExecutable(dir: string, name: string, source: string): Promise<string> {
  const file = path.join(dir, `${name}.ts`);
  await fs.writeFile(file, source);
  const outfile = path.join(dir, name);
  const build = await runTool(
    path.join(REPO_ROOT, 'node_modules', '.bin', 'bun'),
    [
      'build',
      '--compile',
      '--minify',
      '--bytecode',
      '--no-compile-autoload-dotenv',
      '--no-compile-autoload-bunfig',
      '--target=bun-linux-x64-baseline',
      `--outfile=${outfile}`,
      file,
    ],
    { cwd: REPO_ROOT, env: { PATH: AGENT_PATH, HOME: dir }, timeoutMs: 180_000 },
  );
  if (build.exitCode !== 0) throw new Error(`bun build ${name}: ${build.stderr}${build.stdout}`);
  return outfile;
}

/** The handler's `Ran: <command> … durationMs=<n>` log lines of one operation. */
async function ranLines(
  vm: LinuxVm,
  operation: string,
): Promise<{ command: string; durationMs: number }[]> {
  return (await vm.sandbox.readLog())
    .filter((line) => line.operation === operation)
    .map((line) => /^Ran: (.*?)(?: exitCode=\S+ durationMs=(\S+))?$/.exec(line.message ?? ''))
    .filter((match): match is RegExpExecArray => match !== null)
    .map((match) => ({ command: match[1] ?? '', durationMs: Number(match[2] ?? 0) }));
}

const INSTALLING =
  /\b(apt-get|apt|dnf|yum|zypper)\b.*\b(install|remove|purge|upgrade)\b|\bdpkg\s+(-i|--install)/;

async function convergedEnable(zip: string, version: string): Promise<void> {
  process.stdout.write('\n1. Converged re-enable (Debian 12 test VM, mock IMDS)\n');
  const vm = await linuxVm({ kind: 'debian', label: 'bench' });
  try {
    const handler = await unpackHandler(vm, zip, version);
    for (const operation of ['install', 'enable'] as const) {
      const run = await handler.run(operation, { seq: 0 });
      if (run.exitCode !== 0) throw new Error(`${operation} failed: ${run.stdout}${run.stderr}`);
    }
    const ranBefore = (await ranLines(vm, 'enable')).length;
    const enable = await agentArgv(vm, handler);
    const executable = path.join(handler.dir, 'bin', 'linux-x64', 'aadsshlogin-handler');
    const entryScript = path.join(handler.dir, 'handler', 'aadsshlogin-handler.sh');
    const probe = await bunExecutable(handler.dir, 'print-only', 'console.log("1.0.0.0");\n');
    // The one package-database query a converged enable makes (see its `Ran:` lines).
    const query =
      // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's format syntax
      "dpkg-query -W -f='${Package}\\t${Status}\\t${Version}\\n' aadsshlogin-selinux aadsshlogin selinux-policy-default openssh-server openssh aadlogin aadlogin-selinux >/dev/null 2>&1";
    // The same start as the enable's (the entry script and the runtime settings it gives), up to
    // printing the version.
    const floor = vm.world.wrap(
      ['/bin/sh', '-c', `${entryScript} --version >/dev/null; ${query}`],
      handler.dir,
    );
    const printOnly = vm.world.wrap(
      ['/bin/sh', '-c', `${probe} >/dev/null; ${query}`],
      handler.dir,
    );
    const imdsBefore = (await vm.world.imdsRequests()).length;
    await timed(enable.argv, enable); // warm-up
    await timed(floor, { cwd: handler.dir });
    const a: Sample[] = [];
    const b: Sample[] = [];
    const c: Sample[] = [];
    for (let i = 0; i < RUNS; i++) {
      a.push(await timed(enable.argv, enable));
      b.push(await timed(floor, { cwd: handler.dir }));
      c.push(await timed(printOnly, { cwd: handler.dir }));
    }
    const enables = RUNS + 1;
    const imds = (await vm.world.imdsRequests()).length - imdsBefore;
    const ran = (await ranLines(vm, 'enable')).slice(ranBefore);
    const failed = a.filter((s) => s.exitCode !== 0).length;
    row('converged enable: wall ms, median (min–max)', spread(a.map((s) => s.wallMs)));
    row('  peak RSS MiB', spread(mib(a.map((s) => s.rssKiB))));
    row('  exit codes not 0', String(failed));
    row('floor (entry script --version + dpkg-query): wall ms', spread(b.map((s) => s.wallMs)));
    row('  peak RSS MiB', spread(mib(b.map((s) => s.rssKiB))));
    row('print-only Bun exe + dpkg-query: wall ms', spread(c.map((s) => s.wallMs)));
    row('  peak RSS MiB', spread(mib(c.map((s) => s.rssKiB))));
    row(
      'ratio enable / floor (pairwise)',
      spread(
        a.map((s, i) => s.wallMs / (b[i]?.wallMs ?? 1)),
        2,
      ),
    );
    row(
      'ratio enable / print-only floor (pairwise)',
      spread(
        a.map((s, i) => s.wallMs / (c[i]?.wallMs ?? 1)),
        2,
      ),
    );
    row('IMDS requests per converged enable', (imds / enables).toFixed(2));
    row('package-manager commands per enable', (ran.length / enables).toFixed(2));
    row('  of them installing', String(ran.filter((r) => INSTALLING.test(r.command)).length));
    for (const command of new Set(ran.map((r) => r.command))) row('  ran', command);

    // Profile: the same wall clock for a Bun executable that only imports each dependency.
    process.stdout.write(
      '\nProfile: Bun executables importing one dependency each (outside the VM)\n',
    );
    // Inside the repository, so that the imports resolve to its node_modules.
    const host = await fs.mkdtemp(path.join(REPO_ROOT, '.bench-imports-'));
    try {
      const sources: [string, string][] = [
        ['print-only', 'console.log("x");\n'],
        ...DEPENDENCIES.map((d): [string, string] => [
          d,
          `import * as m from '${d}';\nconsole.log(Object.keys(m).length);\n`,
        ]),
        [
          'all of them',
          `${DEPENDENCIES.map((d, i) => `import * as m${i} from '${d}';`).join('\n')}\nconsole.log(${DEPENDENCIES.map((_, i) => `Object.keys(m${i}).length`).join('+')});\n`,
        ],
      ];
      const exes = await Promise.all(
        sources.map(
          async ([name, source]) =>
            [name, await bunExecutable(host, name.replace(/\W/g, '-'), source)] as const,
        ),
      );
      for (const [name, exe] of exes) {
        const samples: Sample[] = [];
        await timed([exe]);
        for (let i = 0; i < RUNS; i++) samples.push(await timed([exe]));
        row(
          `  import ${name}: wall ms / peak RSS MiB`,
          `${spread(samples.map((s) => s.wallMs))} / ${spread(mib(samples.map((s) => s.rssKiB)))}`,
        );
      }
      const handlerHost: Sample[] = [];
      for (let i = 0; i < RUNS; i++) handlerHost.push(await timed([executable, '--version']));
      row(
        '  the handler --version (host): wall ms / peak RSS MiB',
        `${spread(handlerHost.map((s) => s.wallMs))} / ${spread(mib(handlerHost.map((s) => s.rssKiB)))}`,
      );
    } finally {
      await fs.rm(host, { recursive: true, force: true });
    }
  } finally {
    await vm.close();
  }
}

/** The argv, environment and folder the agent starts `enable` with, inside the VM's world. */
async function agentArgv(
  vm: LinuxVm,
  handler: HandlerInstance,
  operation: 'install' | 'enable' = 'enable',
): Promise<{ argv: string[]; env: Record<string, string>; cwd: string }> {
  const planned = await handler.plan(operation, { seq: 0 });
  return {
    argv: vm.world.wrap(['/bin/sh', '-c', planned.command], handler.dir),
    env: planned.env,
    cwd: handler.dir,
  };
}

async function installOverhead(zip: string, version: string): Promise<void> {
  process.stdout.write('\n2. Install overhead (first install + enable, fresh Debian 12 test VM)\n');
  const vm = await linuxVm({ kind: 'debian', label: 'bench-install' });
  try {
    const handler = await unpackHandler(vm, zip, version);
    let total = 0;
    let rss = 0;
    for (const operation of ['install', 'enable'] as const) {
      const planned = await agentArgv(vm, handler, operation);
      const sample = await timed(planned.argv, planned);
      if (sample.exitCode !== 0) throw new Error(`${operation} exited ${sample.exitCode}`);
      await handler.setHandlerState(operation === 'install' ? 'Installed' : 'Enabled');
      total += sample.wallMs;
      rss = Math.max(rss, sample.rssKiB);
    }
    const ran = [...(await ranLines(vm, 'install')), ...(await ranLines(vm, 'enable'))];
    const inside = ran.reduce((sum, r) => sum + r.durationMs, 0);
    row('install + enable: total wall ms', total.toFixed(0));
    row('  inside package-manager commands ms', `${inside.toFixed(0)} (${ran.length} commands)`);
    row(
      '  handler own time ms',
      `${(total - inside).toFixed(0)} (${((100 * (total - inside)) / total).toFixed(1)} %)`,
    );
    row('  peak RSS MiB (largest process, may be apt)', (rss / 1024).toFixed(1));
    const slowest = [...ran].sort((x, y) => y.durationMs - x.durationMs).slice(0, 5);
    for (const r of slowest) row(`  ${r.durationMs} ms`, r.command.slice(0, 100));
  } finally {
    await vm.close();
  }
}

async function sizes(): Promise<void> {
  process.stdout.write('\n3. Package sizes\n');
  for (const name of [LINUX_HANDLER_NAME, WINDOWS_HANDLER_NAME]) {
    const zip = zipPathOf(name);
    const stat = await fs.stat(zip);
    row(`${path.basename(zip)} MB`, (stat.size / 1e6).toFixed(1));
  }
}

async function scale(): Promise<void> {
  // Each in a network namespace of its own, where the mock IMDS can have 169.254.169.254.
  process.stdout.write(
    '\n4. Scale: 200 handler processes, one mock mirror, one mock IMDS (handler-scale.ts)\n',
  );
  printRun(await runHandlerScaleCommand(200, 900_000));
  process.stdout.write(
    '\n4b. The repository step of an AlmaLinux 9 install, 200 processes, one mock mirror (mirror-simulation.ts)\n',
  );
  const result = await runMirrorSimulation({ processes: 200 });
  for (const line of describeSimulation(result)) process.stdout.write(`  ${line}\n`);
}

function printRun(run: { exitCode: number | null; stdout: string; stderr: string }): void {
  for (const line of run.stdout.trim().split('\n')) process.stdout.write(`  ${line}\n`);
  if (run.exitCode !== 0)
    process.stdout.write(`  exit ${run.exitCode}: ${run.stderr.slice(-500)}\n`);
}

async function main(): Promise<void> {
  if (!flag('--reuse-dist')) {
    const build = await runTool('npm', ['run', 'package'], {
      cwd: REPO_ROOT,
      env: { ...process.env } as Record<string, string>,
      timeoutMs: 600_000,
    });
    if (build.exitCode !== 0) throw new Error(`npm run package failed: ${build.stderr}`);
  }
  const zip = await requireZip(LINUX_HANDLER_NAME);
  const version = extensionVersionOf();
  process.stdout.write(
    `machine: ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, Linux ${os.release()}, ${new Date().toISOString()}\n`,
  );
  process.stdout.write(`${RUNS} runs each after one warm-up; figures are median (min–max)\n`);
  if (!flag('--skip-converged')) await convergedEnable(zip, version);
  if (!flag('--skip-install')) await installOverhead(zip, version);
  await sizes();
  if (!flag('--skip-scale')) await scale();
}

await main();
