/** Image archives: `docker save` tars and OCI image layouts (tar or directory), in and out. */
export { importImages, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, type ArchiveFormat, type ImportOptions, type ImportResult } from './import.ts';
export { exportImages, exportLayoutDir, exportStream, type ExportFormat } from './export.ts';
