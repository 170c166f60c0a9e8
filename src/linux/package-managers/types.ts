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
  /**
   * Folders the manager writes to while it works (downloads, metadata, its database): where to
   * free space when it fails for a full disk.
   */
  workFolders: readonly string[];
  /** What the operator runs to empty its download cache (named in a full-disk failure). */
  cleanCommand: string;
  /** Which of `names` are installed, and their versions. */
  queryInstalled(names: readonly string[]): Command;
  /** The names `queryInstalled` found fully installed, with their versions. */
  parseInstalled(stdout: string): Map<string, string>;
  /**
   * The names `queryInstalled` found in the package database in any state: installed, or left
   * halfway by a run that was killed or failed (dpkg's half-installed, unpacked, half-configured,
   * config-files). Such a package is not installed, but `remove` must still take it away.
   */
  parsePresent(stdout: string): Set<string>;
  /** Refreshes our repository's metadata (only ours where the tool allows it). */
  refresh(repository: RepositoryTarget): Command;
  /** Installs `packages` in this order, non-interactively, keeping local configuration files. */
  install(packages: readonly PackageSpec[], repository: RepositoryTarget): Command;
  /**
   * Removes `names` completely (purge where the tool distinguishes), in this order, in whatever
   * state `parsePresent` found them.
   */
  remove(names: readonly string[]): Command;
  /**
   * A run of the package manager killed halfway that blocks every later one until it is finished
   * (dpkg: "dpkg was interrupted, you must manually run 'dpkg --configure -a'"): a file in
   * `journalFolder` whose name `isJournal` accepts says so, and `finish` completes it. Absent
   * where no such state exists.
   */
  interrupted?: {
    journalFolder: string;
    isJournal(name: string): boolean;
    finish: Command;
  };
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
