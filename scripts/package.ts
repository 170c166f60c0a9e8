/**
 * `npm run package`: builds the self-contained executables with Bun and writes the two extension
 * zips of the contract to dist/. Nothing else goes into a zip: the manifest, the entry script and
 * the executables.
 */
import { type ExecFileSyncOptionsWithStringEncoding, execFileSync } from 'node:child_process';
import { promises as fs, realpathSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import packageJson from '../package.json' with { type: 'json' };
import { toExtensionVersion } from '../src/version.js';
import { writeZip, ZIP_EPOCH, type ZipEntry } from './zip.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist');
const staging = path.join(dist, 'build');

interface ExtensionPackage {
  type: string;
  entry: string;
  /**
   * `bytecode`: ship JavaScriptCore bytecode beside the source, so that start-up skips parsing
   * (halves the start-up, docs/performance.md). Off for Windows, where it cannot be run here.
   */
  executables: { target: string; path: string; bytecode: boolean }[];
  files: { from: string; path: string; mode: number }[];
}

export const PUBLISHER = 'Microsoft.Azure.ActiveDirectory';

export const extensionPackages: ExtensionPackage[] = [
  {
    type: 'AADSSHLoginForLinux',
    entry: 'src/linux/main.ts',
    executables: [
      {
        target: 'bun-linux-x64-baseline',
        path: 'bin/linux-x64/aadsshlogin-handler',
        bytecode: true,
      },
      { target: 'bun-linux-arm64', path: 'bin/linux-arm64/aadsshlogin-handler', bytecode: true },
    ],
    files: [
      {
        from: 'handler/aadsshlogin-handler.sh',
        path: 'handler/aadsshlogin-handler.sh',
        mode: 0o755,
      },
    ],
  },
  {
    type: 'AADLoginForWindows',
    entry: 'src/windows/main.ts',
    executables: [
      { target: 'bun-windows-x64', path: 'bin/windows-x64/aadlogin-handler.exe', bytecode: false },
    ],
    files: [],
  },
];

const COMMANDS = [
  'installCommand',
  'enableCommand',
  'disableCommand',
  'uninstallCommand',
  'updateCommand',
];

/** Checks a HandlerManifest.json against what the agent requires and what the zip holds. */
export function checkManifest(text: string, zipPaths: readonly string[]): string[] {
  const problems: string[] = [];
  const manifest = JSON.parse(text) as unknown;
  const first = Array.isArray(manifest) && manifest.length === 1 ? manifest[0] : undefined;
  if (!first || typeof first !== 'object')
    return ['the manifest is not a JSON array of one object'];
  const { version, handlerManifest } = first as {
    version?: unknown;
    handlerManifest?: Record<string, unknown>;
  };
  if (version !== 1) problems.push('"version" must be the number 1.0');
  for (const command of COMMANDS) {
    const value = handlerManifest?.[command];
    if (typeof value !== 'string') {
      problems.push(`${command} is missing`);
      continue;
    }
    const file = value.split(' ')[0]?.replaceAll('\\', '/');
    if (!file || !zipPaths.includes(file))
      problems.push(`${command} names ${file}, which is not in the zip`);
  }
  for (const flag of ['reportHeartbeat', 'continueOnUpdateFailure', 'supportsMultipleExtensions']) {
    if (typeof handlerManifest?.[flag] !== 'boolean')
      problems.push(`${flag} must be a JSON boolean`);
  }
  return problems;
}

/**
 * The time every zip entry records, so that two builds of one commit give the same bytes:
 * `SOURCE_DATE_EPOCH` (seconds) when set, else the date of the commit checked out at `checkout`,
 * else (a copy that is not a git checkout) 1980-01-01.
 */
export function sourceDate(checkout: string = root): Date {
  const fromEnvironment = process.env.SOURCE_DATE_EPOCH;
  if (fromEnvironment && /^\d+$/.test(fromEnvironment)) {
    return new Date(Number(fromEnvironment) * 1000);
  }
  try {
    const options: ExecFileSyncOptionsWithStringEncoding = {
      cwd: checkout,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    };
    const top = execFileSync('git', ['rev-parse', '--show-toplevel'], options).trim();
    if (realpathSync(top) !== realpathSync(checkout)) return ZIP_EPOCH;
    const seconds = execFileSync('git', ['log', '-1', '--format=%ct', 'HEAD'], options).trim();
    return /^\d+$/.test(seconds) ? new Date(Number(seconds) * 1000) : ZIP_EPOCH;
  } catch {
    return ZIP_EPOCH;
  }
}

async function compile(
  entry: string,
  { target, bytecode }: { target: string; bytecode: boolean },
  outfile: string,
): Promise<void> {
  await fs.mkdir(path.dirname(outfile), { recursive: true });
  execFileSync(
    path.join(root, 'node_modules', '.bin', 'bun'),
    [
      'build',
      '--compile',
      '--minify',
      // A Bun executable otherwise reads .env and bunfig.toml from its working directory (the
      // handler's folder) at start: the environment would no longer be the agent's.
      '--no-compile-autoload-dotenv',
      '--no-compile-autoload-bunfig',
      ...(bytecode ? ['--bytecode'] : []),
      `--target=${target}`,
      `--outfile=${outfile}`,
      entry,
    ],
    { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] },
  );
}

function megabytes(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

async function main(): Promise<void> {
  const version = toExtensionVersion(packageJson.version);
  const modified = sourceDate();
  await fs.rm(staging, { recursive: true, force: true });
  await fs.mkdir(dist, { recursive: true });
  for (const extension of extensionPackages) {
    const entries: ZipEntry[] = [];
    const manifestText = await fs.readFile(
      path.join(root, 'manifest', extension.type, 'HandlerManifest.json'),
      'utf8',
    );
    entries.push({ name: 'HandlerManifest.json', data: Buffer.from(manifestText), mode: 0o644 });
    for (const file of extension.files) {
      entries.push({
        name: file.path,
        data: await fs.readFile(path.join(root, file.from)),
        mode: file.mode,
      });
    }
    for (const executable of extension.executables) {
      const outfile = path.join(staging, extension.type, executable.path);
      const started = Date.now();
      await compile(extension.entry, executable, outfile);
      process.stdout.write(
        `compiled ${executable.path} (${executable.target}) in ${Date.now() - started} ms\n`,
      );
      entries.push({ name: executable.path, data: await fs.readFile(outfile), mode: 0o755 });
    }
    const problems = checkManifest(
      manifestText,
      entries.map((entry) => entry.name),
    );
    if (problems.length) {
      throw new Error(`manifest/${extension.type}/HandlerManifest.json: ${problems.join('; ')}`);
    }
    const zip = path.join(dist, `${PUBLISHER}.${extension.type}-${version}.zip`);
    await writeZip(zip, entries, modified);
    const size = (await fs.stat(zip)).size;
    process.stdout.write(`built ${path.relative(root, zip)} (${megabytes(size)})\n`);
    for (const entry of entries) {
      process.stdout.write(
        `  ${entry.name.padEnd(40)} ${megabytes(entry.data.length).padStart(9)}\n`,
      );
    }
  }
  await fs.rm(staging, { recursive: true, force: true });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main();
}
