/**
 * Fresh checkouts of this repository for the build and release tests: a `git clone` of HEAD in a
 * temporary folder with node_modules linked, and the package and release scripts run in it.
 */
import { execFile } from 'node:child_process';
import { promises as fs, realpathSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from './agent-driver.js';

const execFileAsync = promisify(execFile);

/** A clone of this repository's HEAD (committed work only) in a new temporary folder. */
export async function cloneHead(label: string): Promise<string> {
  const parent = await fs.mkdtemp(path.join(os.tmpdir(), `aad-${label}-`));
  const clone = path.join(parent, 'checkout');
  await execFileAsync('git', ['clone', '--quiet', '--no-hardlinks', REPO_ROOT, clone]);
  await execFileAsync('git', ['config', 'user.email', 'tests@example.invalid'], { cwd: clone });
  await execFileAsync('git', ['config', 'user.name', 'tests'], { cwd: clone });
  await fs.symlink(
    realpathSync(path.join(REPO_ROOT, 'node_modules')),
    path.join(clone, 'node_modules'),
  );
  return clone;
}

/** Removes a checkout made by {@link cloneHead}. */
export async function removeCheckout(clone: string): Promise<void> {
  await fs.rm(path.dirname(clone), { recursive: true, force: true });
}

/** The outcome of a script run in a checkout. */
export interface ScriptRun {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs a TypeScript script of a checkout (as its npm script does, without npm). */
export async function runScript(
  checkout: string,
  script: string,
  args: readonly string[] = [],
): Promise<ScriptRun> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.SOURCE_DATE_EPOCH;
  try {
    const { stdout, stderr } = await execFileAsync(
      path.join(checkout, 'node_modules', '.bin', 'tsx'),
      [script, ...args],
      { cwd: checkout, env, maxBuffer: 16 * 1024 * 1024 },
    );
    return { exitCode: 0, stdout, stderr };
  } catch (error) {
    const failure = error as { code?: number; stdout?: string; stderr?: string };
    return {
      exitCode: typeof failure.code === 'number' ? failure.code : 1,
      stdout: failure.stdout ?? '',
      stderr: failure.stderr ?? '',
    };
  }
}

/** Runs git in a checkout and returns its output. */
export async function git(checkout: string, ...args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('git', args, { cwd: checkout });
  return stdout;
}
