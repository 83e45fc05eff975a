/** Corral's cgroups library: one CgroupManager interface over cgroup v1 (and hybrid) and v2. */
export * from './types.ts';
export {
  createCgroupManager, defaultCgroupsPath, normalizeCgroupsPath,
  type CgroupManager, type CgroupManagerOptions,
} from './manager.ts';
export {
  detectCgroupMode, detectCgroupModeByStatfs, findCgroupMounts, ownCgroup, parseMountInfo, parseProcCgroup,
  cgroupMountsFromMountInfo, cgroupMountsFromLayout, modeFromMounts, cgroupDirOnMount, isCgroupFs,
  DEFAULT_CGROUP_ROOT, DEFAULT_PROCFS, V1_CONTROLLERS,
  type CgroupMount, type CgroupMounts, type MountInfoEntry, type OwnCgroup,
} from './detect.ts';
export { DEFAULT_ALLOWED_DEVICES, normalizeDeviceRules, type DeviceRule } from './devices.ts';
export { compileDeviceFilter, compileDeviceFilterInsns, decodeInsns, type BpfInsn } from './v2-devices.ts';
export { sharesToWeight, blkioWeightToIoWeight, swapToV2 } from './v2.ts';
export { V1Manager } from './v1.ts';
export { V2Manager } from './v2.ts';
