// The hand-written api.proto against wire facts of CRI runtime.v1 (Kubernetes 1.26), and the
// generated TypeScript shapes against the proto.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { loadDefinition } from './proto.ts';
import { renderTypes } from './gen-types.ts';
import { RuntimeServiceMethodNames, ImageServiceMethodNames } from './types.gen.ts';

type Desc = { type: { field: { name: string; number: number; type: string; label: string }[]; value?: { name: string; number: number }[] } };
const def = loadDefinition() as unknown as Record<string, Desc & Record<string, { path: string; responseStream: boolean }>>;
const fields = (msg: string) => Object.fromEntries(def[`runtime.v1.${msg}`]!.type.field.map((f) => [f.name, f.number]));

test('types.gen.ts is up to date with api.proto (regenerate with node src/cri/gen-types.ts)', () => {
  assert.equal(readFileSync(fileURLToPath(new URL('./types.gen.ts', import.meta.url)), 'utf8'), renderTypes());
});

test('services and method paths are those of runtime.v1', () => {
  assert.equal(RuntimeServiceMethodNames.length, 29); // 28 of Kubernetes 1.26 + RuntimeConfig
  assert.equal(ImageServiceMethodNames.length, 5);
  assert.equal(def['runtime.v1.RuntimeService']!.Version!.path, '/runtime.v1.RuntimeService/Version');
  assert.equal(def['runtime.v1.ImageService']!.PullImage!.path, '/runtime.v1.ImageService/PullImage');
  assert.equal(def['runtime.v1.RuntimeService']!.GetContainerEvents!.responseStream, true);
});

test('field numbers that differ from declaration order are right', () => {
  assert.deepEqual(fields('LinuxSandboxSecurityContext'), {
    namespace_options: 1, selinux_options: 2, run_as_user: 3, readonly_rootfs: 4, supplemental_groups: 5,
    privileged: 6, seccomp_profile_path: 7, run_as_group: 8, seccomp: 9, apparmor: 10,
  });
  assert.equal(fields('LinuxContainerSecurityContext').run_as_group, 12);
  assert.equal(fields('LinuxContainerSecurityContext').no_new_privs, 11);
  assert.equal(fields('LinuxContainerSecurityContext').apparmor, 16);
  assert.deepEqual(fields('Namespace'), { options: 2 });
  assert.equal(fields('AttachRequest').stdin, 2);
  assert.equal(fields('AttachRequest').tty, 3);
  assert.equal(fields('ExecRequest').tty, 3);
  assert.equal(fields('ExecRequest').stdin, 4);
  assert.equal(fields('ContainerConfig').windows, 16);
  assert.equal(fields('LinuxContainerResources').memory_swap_limit_in_bytes, 10);
  assert.equal(fields('PodSandboxStatusResponse').timestamp, 4);
  assert.equal(fields('ContainerEventResponse').containers_statuses, 5);
  assert.equal(fields('Metric').value, 5);
  assert.equal(fields('WindowsMemoryUsage').page_faults, 4);
});

test('enum values', () => {
  const vals = (e: string) => Object.fromEntries(def[`runtime.v1.${e}`]!.type.value!.map((v) => [v.name, v.number]));
  assert.deepEqual(vals('NamespaceMode'), { POD: 0, CONTAINER: 1, NODE: 2, TARGET: 3 });
  assert.deepEqual(vals('ContainerState'), { CONTAINER_CREATED: 0, CONTAINER_RUNNING: 1, CONTAINER_EXITED: 2, CONTAINER_UNKNOWN: 3 });
  assert.deepEqual(vals('ContainerEventType'), { CONTAINER_CREATED_EVENT: 0, CONTAINER_STARTED_EVENT: 1, CONTAINER_STOPPED_EVENT: 2, CONTAINER_DELETED_EVENT: 3 });
  assert.deepEqual(vals('CgroupDriver'), { SYSTEMD: 0, CGROUPFS: 1 });
});
