import { existsSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { Extension } from './lifecycle/extension.js';
import type { PipelineDependencies } from './lifecycle/pipeline.js';
import { EXTENSION_VERSION } from './version.js';

/**
 * The handler's folder: the nearest folder above the executable that holds HandlerManifest.json
 * (the shipped layout is `<handler>/bin/<platform>/<executable>`), else the working directory,
 * which the agent sets to the handler's folder.
 */
export function findHandlerDir(executable: string, cwd: () => string): string {
  let dir = path.dirname(executable);
  for (let level = 0; level < 4; level++) {
    if (existsSync(path.join(dir, 'HandlerManifest.json'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  return cwd();
}

/**
 * Parses the verb and runs it through the lifecycle pipeline; the only place that exits the
 * process. What it prints (one line) is what the agent shows an operator on failure.
 *
 * Everything but this file is loaded after the verb is known (`loadExtension` and the dynamic
 * imports below), so that each command loads only what it uses: a bundle evaluates every module
 * it imports statically before the first line runs (docs/performance.md).
 */
export async function main<Settings>(
  loadExtension: () => Promise<Extension<Settings>>,
): Promise<never> {
  const verb = process.argv[2];
  // Bare start-up, for the performance floor (docs/performance.md): nothing else is loaded.
  if (verb === '--version') return exit(0, EXTENSION_VERSION);
  const [
    extension,
    { failureKinds },
    { errorMessage },
    { writeLastResortStatus },
    { isVerb, VERBS },
  ] = await Promise.all([
    loadExtension(),
    import('./failures.js'),
    import('./io/files.js'),
    import('./protocol/last-resort.js'),
    import('./lifecycle/operations.js'),
  ]);
  const handlerDir = findHandlerDir(process.execPath, () => process.cwd());
  const env = process.env;
  // diagnose only reads: even when it crashes, it writes no status file (see `crash`).
  if (verb === 'diagnose' && extension.diagnose) {
    const report = await extension.diagnose({
      args: process.argv.slice(3),
      handlerDir,
      handlerName: extension.handlerName,
      version: EXTENSION_VERSION,
    });
    return exit(report.exitCode, report.output);
  }
  // `install --dry-run`, `enable --dry-run`: prints a plan and writes nothing, not even a status.
  const dryRun = process.argv[3] === '--dry-run';
  const crash = async (error: unknown) => {
    const kind = failureKinds.unexpected;
    const message = `${kind.title} ${errorMessage(error)} ${kind.remedy}`;
    if (!dryRun) {
      await writeLastResortStatus({
        handlerDir,
        env,
        handlerName: extension.handlerName,
        code: kind.code,
        message,
        operation: verb ?? 'unknown',
      }).catch(() => undefined);
    }
    return exit(kind.code, message);
  };
  process.on('uncaughtException', crash);
  process.on('unhandledRejection', crash);

  if (!isVerb(verb)) {
    return exit(
      failureKinds.unknownCommand.code,
      `Usage: ${path.basename(process.argv[1] ?? 'handler')} ${[...VERBS, ...(extension.diagnose ? ['diagnose'] : [])].join('|')}${extension.dryRun ? ' (install and enable also take --dry-run)' : ''} (got "${verb ?? ''}").`,
    );
  }
  const [{ systemClock }, { createFileLog }, { systemProcesses }, { runCommand }] =
    await Promise.all([
      import('./io/clock.js'),
      import('./io/log.js'),
      import('./io/processes.js'),
      import('./lifecycle/pipeline.js'),
    ]);
  const deps: PipelineDependencies<Settings> = {
    extension,
    version: EXTENSION_VERSION,
    handlerDir,
    env,
    clock: systemClock,
    processes: systemProcesses,
    createLog: (options) =>
      createFileLog({ ...options, onProblem: (problem) => process.stderr.write(`${problem}\n`) }),
    warn: (problem) => process.stderr.write(`${problem}\n`),
  };
  // Loaded only when asked for, so that the everyday commands do not load it.
  const result = dryRun
    ? await (await import('./lifecycle/dry-run.js')).runDryRun(verb, deps)
    : await runCommand(verb, deps);
  return exit(result.exitCode, result.message);
}

/**
 * Prints `message` and exits. Written straight to file descriptor 1: `process.stdout` is a stream
 * whose first use loads Node's whole stream machinery (a tenth of a converged enable). A stdout
 * that cannot take the line at once (a full non-blocking pipe) gets it through the stream.
 */
function exit(code: number, message: string): Promise<never> {
  const bytes = Buffer.from(`${message}\n`);
  let written = 0;
  try {
    written = writeSync(1, bytes);
  } catch {
    // EAGAIN or a closed stdout: the stream below waits for the one, and the exit code says it
  }
  if (written === bytes.length) process.exit(code);
  return new Promise(() => {
    process.stdout.write(bytes.subarray(written), () => process.exit(code));
  });
}
