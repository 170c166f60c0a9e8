/**
 * What every package manager module provides: the exact commands for each verb, and how to read
 * their answers. Modules only build argument arrays and parse output; running them is the
 * caller's (so a plan can be printed without running anything).
 */
export type ManagerName = 'apt' | 'dnf' | 'yum' | 'tdnf' | 'zypper';

export interface Command {
  argv: readonly string[];
  /** Extra environment for this command (on top of the handler's, proxies included). */
  env?: Readonly<Record<string, string>>;
}

/** A package, with the exact version to install when one is required. */
export interface PackageSpec {
  name: string;
  version?: string;
}

/** Where our repository is configured for this manager. */
export interface RepositoryTarget {
  /** The file we write. */
  file: string;
  /** The repository's id inside that file (rpm families), for refreshing only it. */
  id: string;
}

export interface PackageManager {
  name: ManagerName;
  /** Files the manager locks while it works (to wait for, and to name their holder). */
  lockFiles: readonly string[];
  /** Which of `names` are installed, and their versions. */
  queryInstalled(names: readonly string[]): Command;
  parseInstalled(stdout: string): Map<string, string>;
  /** Refreshes our repository's metadata (only ours where the tool allows it). */
  refresh(repository: RepositoryTarget): Command;
  /** Installs `packages` in this order, non-interactively, keeping local configuration files. */
  install(packages: readonly PackageSpec[], repository: RepositoryTarget): Command;
  /** Removes `names` completely (purge where the tool distinguishes), in this order. */
  remove(names: readonly string[]): Command;
  /** Keeps `name` at its installed version through later updates; `undefined` if not needed. */
  hold(name: string): Command;
  release(name: string): Command;
  /**
   * Whether a failed command's output says the repository answered 429 (rate limited): the
   * repository is there and asks to wait, so the command is worth running again later. None of
   * the managers honours Retry-After, and dnf (4 tries at once) and zypper (1) give up at once.
   */
  throttled(output: string): boolean;
}
