/**
 * What is inside the built zips: exactly the shipped files, manifests the agent can read, Linux
 * executables that load on glibc 2.17 and really run on x86-64 and (under qemu) aarch64, and a
 * Windows executable that is a PE32+ x86-64 console image. Assumes `npm run package` ran.
 */
import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { compareVersions } from '../../src/linux/checks/support-matrix.js';
import {
  AGENT_PATH,
  type AgentSandbox,
  ensureWaagent,
  extensionVersionOf,
  type HandlerInstance,
  LINUX_HANDLER_NAME,
  OPERATIONS,
  PYTHON,
  requireZip,
  runTool,
  WINDOWS_HANDLER_NAME,
  zipEntries,
} from './agent-driver.js';
import { type LinuxVm, linuxVm } from './vm.js';

const version = extensionVersionOf();
const QEMU = '/usr/bin/qemu-aarch64-static';
const AARCH64_ROOT = '/usr/aarch64-linux-gnu';
const EXECUTABLES = {
  x64: 'bin/linux-x64/aadsshlogin-handler',
  arm64: 'bin/linux-arm64/aadsshlogin-handler',
} as const;

/** The ELF header fields that tell the machine a file is built for. */
async function elfHeader(
  file: string,
): Promise<{ elfClass: number; data: number; machine: number }> {
  const handle = await fs.open(file, 'r');
  try {
    const header = Buffer.alloc(20);
    await handle.read(header, 0, 20, 0);
    assert.deepEqual([...header.subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46], `${file} is not ELF`);
    return { elfClass: header[4] ?? 0, data: header[5] ?? 0, machine: header.readUInt16LE(18) };
  } finally {
    await handle.close();
  }
}

describe('the Linux zip', () => {
  let zip = '';
  let sandbox: AgentSandbox;
  let handler: HandlerInstance;
  /**
   * The commands run in a test VM (vm.ts: a Debian root with the repository stand-in and an IMDS
   * with an identity), which also holds qemu and the aarch64 C library for the arm64 executable.
   */
  let vm: LinuxVm;
  before(async () => {
    zip = await requireZip(LINUX_HANDLER_NAME);
    await ensureWaagent();
    vm = await linuxVm({
      kind: 'debian',
      label: 'artifacts',
      binds: existsSync(AARCH64_ROOT) ? [AARCH64_ROOT] : [],
    });
    if (existsSync(QEMU)) await fs.copyFile(QEMU, vm.root.path(QEMU));
    sandbox = vm.sandbox;
    handler = await sandbox.unpack(zip, version);
  });
  after(async () => {
    await vm?.close();
  });

  test('holds exactly the manifest, the entry script and the two executables', async () => {
    assert.deepEqual((await zipEntries(zip)).sort(), [
      'HandlerManifest.json',
      EXECUTABLES.arm64,
      EXECUTABLES.x64,
      'handler/aadsshlogin-handler.sh',
    ]);
  });

  test('the agent reads its HandlerManifest.json: five commands running the entry script with their verb', async () => {
    const manifest = await handler.agentManifest();
    for (const operation of OPERATIONS) {
      assert.equal(manifest.commands[operation], `handler/aadsshlogin-handler.sh ${operation}`);
    }
    assert.equal(manifest.reportHeartbeat, false);
    assert.equal(manifest.updateWithInstall, true);
    assert.equal(manifest.continueOnUpdateFailure, false);
    assert.equal(manifest.supportsMultipleExtensions, false);
    const raw = JSON.parse(
      await fs.readFile(path.join(handler.dir, 'HandlerManifest.json'), 'utf8'),
    );
    assert.ok(Array.isArray(raw) && raw.length === 1, 'a JSON array of one element');
  });

  test('the entry script is POSIX sh that dash parses', async () => {
    const parsed = await runTool('/bin/sh', [
      '-n',
      path.join(handler.dir, 'handler', 'aadsshlogin-handler.sh'),
    ]);
    assert.equal(parsed.exitCode, 0, parsed.stderr);
    const text = await fs.readFile(
      path.join(handler.dir, 'handler', 'aadsshlogin-handler.sh'),
      'utf8',
    );
    assert.match(text, /^#!\/bin\/sh\n/);
    assert.ok(!text.includes('\r'), 'no CR line ends');
  });

  test("the entry script starts the executable in JavaScriptCore's interpreter (no JIT)", async () => {
    // ≈8 MiB of peak memory per command (docs/performance.md); the install and enable tests below
    // run the executable this way.
    const text = await fs.readFile(
      path.join(handler.dir, 'handler', 'aadsshlogin-handler.sh'),
      'utf8',
    );
    assert.match(text, /^BUN_JSC_useJIT=0 "\$executable" "\$@"$/m);
  });

  for (const [arch, relative] of Object.entries(EXECUTABLES)) {
    test(`the ${arch} executable needs nothing newer than GLIBC_2.17 and nothing but glibc`, async () => {
      const file = path.join(handler.dir, relative);
      const symbols = await runTool('objdump', ['-T', file]);
      assert.equal(symbols.exitCode, 0, symbols.stderr);
      const headers = await runTool('objdump', ['-p', file]);
      assert.equal(headers.exitCode, 0, headers.stderr);
      const versions = [
        ...`${symbols.stdout}\n${headers.stdout}`.matchAll(/GLIBC_(\d+(?:\.\d+)+)/g),
      ].map((match) => match[1] ?? '');
      assert.ok(versions.length > 0, 'it links glibc dynamically');
      const highest = versions.sort(compareVersions).at(-1) ?? '';
      assert.ok(compareVersions(highest, '2.17') <= 0, `it needs GLIBC_${highest}`);
      const needed = [...headers.stdout.matchAll(/^\s+NEEDED\s+(\S+)$/gm)].map((match) => match[1]);
      for (const library of needed) {
        assert.match(
          library ?? '',
          /^(libc\.so\.6|libm\.so\.6|libdl\.so\.2|libpthread\.so\.0|librt\.so\.1|ld-linux-(x86-64|aarch64)\.so\.[12])$/,
          `it needs ${library}, which is not part of glibc`,
        );
      }
    });
  }

  test('the x64 executable is an x86-64 ELF and the arm64 one an aarch64 ELF', async () => {
    const x64 = await elfHeader(path.join(handler.dir, EXECUTABLES.x64));
    assert.deepEqual(x64, { elfClass: 2, data: 1, machine: 62 });
    const arm64 = await elfHeader(path.join(handler.dir, EXECUTABLES.arm64));
    assert.deepEqual(arm64, { elfClass: 2, data: 1, machine: 183 });
    const described = await runTool('file', [
      '-b',
      path.join(handler.dir, EXECUTABLES.x64),
      path.join(handler.dir, EXECUTABLES.arm64),
    ]);
    const [x64Text, arm64Text] = described.stdout.trim().split('\n');
    assert.match(x64Text ?? '', /^ELF 64-bit LSB .*x86-64/);
    assert.match(arm64Text ?? '', /^ELF 64-bit LSB .*ARM aarch64/);
  });

  test('the x64 executable prints its version with --version, writing nothing', async () => {
    const run = await runTool(path.join(handler.dir, EXECUTABLES.x64), ['--version'], {
      cwd: handler.dir,
      env: { PATH: AGENT_PATH },
    });
    assert.equal(run.exitCode, 0, run.stderr);
    assert.equal(run.stdout, `${version}\n`);
    assert.deepEqual(await fs.readdir(handler.statusFolder), []);
  });

  test('on x86-64 the entry script runs the x64 executable: install and enable succeed', async () => {
    await handler.writeSettings(0, { publicSettings: vm.publicSettings });
    // A Bun executable reads .env and bunfig.toml from its working directory unless built not
    // to: these would send the repository traffic to a proxy that is not there.
    const deadProxy = 'http://127.0.0.1:9';
    await fs.writeFile(
      path.join(handler.dir, '.env'),
      ['http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY']
        .map((name) => `${name}=${deadProxy}\n`)
        .join(''),
    );
    await fs.writeFile(path.join(handler.dir, 'bunfig.toml'), `preload = ["./missing.ts"]\n`);
    for (const operation of ['install', 'enable'] as const) {
      const run = await handler.run(operation, { seq: 0 });
      assert.equal(run.exitCode, 0, `${operation}: ${run.stdout}${run.stderr}`);
    }
    assert.equal((await handler.agentStatus(0)).status, 'success');
    const lines = await sandbox.readLog();
    assert.ok(lines.some((line) => line.version === version && line.operation === 'enable'));
    await fs.rm(path.join(handler.dir, '.env'));
    await fs.rm(path.join(handler.dir, 'bunfig.toml'));
  });

  describe('the arm64 executable under qemu-aarch64', () => {
    let problem: string | undefined;
    before(() => {
      if (!existsSync(QEMU) || !existsSync(AARCH64_ROOT)) {
        problem = `${QEMU} or ${AARCH64_ROOT} is missing (Debian packages qemu-user-static and libc6-arm64-cross; scripts/test.sh installs them)`;
      }
    });

    test('run directly with the agent environment, enable writes a success status', async (t) => {
      if (problem) return t.skip(problem);
      const arm = await sandbox.unpack(zip, `${version}-arm64`);
      await arm.writeSettings(3, { publicSettings: vm.publicSettings });
      const executable = path.join(arm.dir, EXECUTABLES.arm64);
      const run = await arm.run('enable', {
        seq: 3,
        launcher: (_argv, cwd) =>
          vm.world.wrap([QEMU, '-L', AARCH64_ROOT, executable, 'enable'], cwd),
      });
      assert.equal(run.exitCode, 0, `${run.stdout}${run.stderr}`);
      const status = await arm.agentStatus(3);
      assert.equal(status.status, 'success');
      assert.equal(status.operation, 'Enable');
      assert.equal(run.stdout.trim(), status.message);
    });

    test('on an aarch64 machine (uname -m says aarch64) the entry script picks it, and install succeeds', async (t) => {
      if (problem) return t.skip(problem);
      const arm = await sandbox.unpack(zip, `${version}-aarch64`);
      await arm.writeSettings(4, { publicSettings: vm.publicSettings });
      // This machine cannot exec aarch64 directly (no binfmt_misc here): the shipped executable
      // moves aside and a stand-in at its path hands it to qemu.
      const executable = path.join(arm.dir, EXECUTABLES.arm64);
      await fs.rename(executable, `${executable}.aarch64`);
      await fs.writeFile(
        executable,
        `#!/bin/sh\nexec '${QEMU}' -L '${AARCH64_ROOT}' "$0.aarch64" "$@"\n`,
        { mode: 0o755 },
      );
      const fakeBin = path.join(sandbox.root, 'fake-aarch64-bin');
      await fs.mkdir(fakeBin, { recursive: true });
      await fs.writeFile(path.join(fakeBin, 'uname'), '#!/bin/sh\necho aarch64\n', { mode: 0o755 });
      // If the script picked the x64 executable instead, this would make that fail.
      await fs.rm(path.join(arm.dir, EXECUTABLES.x64));
      const run = await arm.run('install', {
        seq: 4,
        agentEnvironment: { PATH: `${fakeBin}:${AGENT_PATH}` },
      });
      assert.equal(run.exitCode, 0, `${run.stdout}${run.stderr}`);
      const status = await arm.agentStatus(4);
      assert.equal(status.status, 'success');
      assert.equal(status.operation, 'Install');
    });
  });
});

describe('the Windows zip', () => {
  let zip = '';
  before(async () => {
    zip = await requireZip(WINDOWS_HANDLER_NAME);
  });

  const EXE = 'bin/windows-x64/aadlogin-handler.exe';

  /** The first bytes of a zip entry, read by Python's zipfile without unpacking the whole file. */
  async function entryHead(name: string, bytes: number): Promise<Buffer> {
    const read = await runTool(PYTHON, [
      '-c',
      'import base64, sys, zipfile; sys.stdout.write(base64.b64encode(zipfile.ZipFile(sys.argv[1]).open(sys.argv[2]).read(int(sys.argv[3]))).decode())',
      zip,
      name,
      String(bytes),
    ]);
    assert.equal(read.exitCode, 0, read.stderr);
    return Buffer.from(read.stdout, 'base64');
  }

  test('holds exactly the manifest and the executable, nothing for Linux', async () => {
    const entries = await zipEntries(zip);
    assert.deepEqual(entries.sort(), ['HandlerManifest.json', EXE]);
    assert.ok(!entries.some((entry) => entry.endsWith('.sh') || entry.includes('linux')));
  });

  test('HandlerManifest.json is one element with the five commands running the executable with their verb', async () => {
    const manifest = JSON.parse(
      (await entryHead('HandlerManifest.json', 1 << 20)).toString('utf8'),
    );
    assert.ok(Array.isArray(manifest) && manifest.length === 1);
    const [first] = manifest as [{ version: unknown; handlerManifest: Record<string, unknown> }];
    assert.equal(first.version, 1);
    for (const operation of OPERATIONS) {
      assert.equal(
        first.handlerManifest[`${operation}Command`],
        `${EXE.replaceAll('/', '\\')} ${operation}`,
      );
    }
    for (const flag of [
      'reportHeartbeat',
      'continueOnUpdateFailure',
      'supportsMultipleExtensions',
    ]) {
      assert.equal(typeof first.handlerManifest[flag], 'boolean', flag);
    }
  });

  test('the executable is a PE32+ x86-64 console image', async () => {
    const head = await entryHead(EXE, 4096);
    assert.equal(head.toString('latin1', 0, 2), 'MZ');
    const pe = head.readUInt32LE(0x3c);
    assert.ok(pe + 24 + 70 <= head.length, `PE header at ${pe} is beyond the first 4 KiB`);
    assert.equal(head.toString('latin1', pe, pe + 4), 'PE\0\0');
    assert.equal(head.readUInt16LE(pe + 4), 0x8664, 'machine is x86-64');
    assert.ok(head.readUInt16LE(pe + 22) & 0x0002, 'IMAGE_FILE_EXECUTABLE_IMAGE');
    const optional = pe + 24;
    assert.equal(head.readUInt16LE(optional), 0x20b, 'optional header magic is PE32+');
    assert.equal(head.readUInt16LE(optional + 68), 3, 'subsystem is the Windows console');
  });
});
