import { apt } from './apt.js';
import { dnf } from './dnf.js';
import { tdnf } from './tdnf.js';
import type { ManagerName, PackageManager } from './types.js';
import { yum } from './yum.js';
import { zypper } from './zypper.js';

export const packageManagers: Readonly<Record<ManagerName, PackageManager>> = {
  apt,
  dnf,
  yum,
  tdnf,
  zypper,
};

export type {
  Command,
  ManagerName,
  PackageManager,
  PackageSpec,
  RepositoryTarget,
} from './types.js';
