/** The seccomp layer: OCI `linux.seccomp` → classic BPF for seccomp(SECCOMP_SET_MODE_FILTER). */
export { compileSeccomp, planSeccomp, actionReturn, hostArch } from './compile.ts';
export type { CompileOptions, CompiledSeccomp } from './compile.ts';
export { validateSeccomp, seccompIssues } from './validate.ts';
export type { SeccompIssue } from './validate.ts';
export { runtimeDefaultProfile, DEFAULT_CAPABILITIES } from './default-profile.ts';
export type { DefaultProfileOptions } from './default-profile.ts';
export type * from './types.ts';
