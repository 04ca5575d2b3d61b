// Shapes of the control plane's REST API (control/src/api/*), as the
// console reads them. `/openapi.json` is the full description.

export type CapsuleStatus =
  | 'starting'
  | 'running'
  | 'pausing'
  | 'paused'
  | 'resuming'
  | 'snapshotting'
  | 'stopping'
  | 'stopped'
  | 'missing'
  | 'error';

export interface Capsule {
  id: string;
  status: CapsuleStatus;
  template: string;
  vcpus: number;
  memory_mb: number;
  timeout_sec: number;
  disk_size_mb: number;
  created_at: string;
  started_at?: string;
  last_active_at?: string;
  last_updated: string;
  metadata: Record<string, string>;
  error?: string;
}

export interface AuthResponse {
  token: string;
  user_id: string;
  team_id: string;
  email: string;
  name: string;
}

export interface Me {
  user_id: string;
  name: string;
  email: string;
  is_admin: boolean;
  team_id: string;
  role: 'member' | 'admin' | 'owner';
}

export interface Team {
  id: string;
  name: string;
  slug: string;
  created_at: string;
  role: string;
}

export interface Member {
  user_id: string;
  email: string;
  name: string;
  role: string;
  joined_at: string;
}

export interface Template {
  name: string;
  type: string;
  vcpus: number | null;
  memory_mb: number | null;
  size_bytes: number;
  created_at: string;
  platform: boolean;
  protected: boolean;
  metadata: Record<string, unknown>;
}

export interface MetricPoint {
  timestamp_unix: number;
  cpu_pct: number;
  mem_bytes: number;
  disk_bytes: number;
}

export interface FileEntry {
  name: string;
  path: string;
  type: 'file' | 'directory' | 'symlink';
  size: number;
  mode: number;
  permissions: string;
  owner: string;
  group: string;
  modified_at: number;
  symlink_target: string | null;
}

export interface ProcessEntry {
  pid: number;
  tag: string | null;
  cmd: string;
  args: string[];
}

export interface ApiKey {
  id: string;
  team_id: string;
  name: string;
  key_prefix: string;
  created_at: string;
  last_used: string | null;
  expires_at: string | null;
  revoked: boolean;
  /** Only in the answer to a create. */
  key?: string | null;
}

export interface Host {
  id: string;
  type: string;
  team_id: string | null;
  provider: string | null;
  availability_zone: string | null;
  arch: string | null;
  cpu_cores: number | null;
  memory_mb: number | null;
  disk_gb: number | null;
  address: string | null;
  backend: string | null;
  status: string;
  last_heartbeat_at: string | null;
  created_at: string;
  tags: string[];
}

export interface AuditItem {
  id: number;
  actor_type: string;
  actor_id: string | null;
  actor_name: string | null;
  resource_type: string;
  resource_id: string | null;
  action: string;
  status: string;
  http_status: number | null;
  metadata: Record<string, unknown>;
  created_at: string;
}

export interface AuditPage {
  items: AuditItem[];
  next_before_id: number | null;
}

export type BuildStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';
export type StepStatus = 'pending' | 'running' | 'cached' | 'done' | 'failed' | 'cancelled' | 'skipped';

export interface BuildStep {
  index: number;
  line: number;
  instruction: string;
  text: string;
  status: StepStatus;
  runs: number;
  exit_code: number | null;
  error: string | null;
  started_at: string | null;
  finished_at: string | null;
}

export interface Build {
  id: string;
  name: string;
  base: string;
  recipe: string;
  status: BuildStatus;
  cancel_requested: boolean;
  error?: string;
  cached_steps: number;
  steps: BuildStep[];
  template?: string;
  attempts: number;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
}

export interface BuildLog {
  id: number;
  step: number | null;
  stream: 'stdout' | 'stderr' | 'system';
  text: string;
  at: string;
}

export interface BuildEnd {
  status: BuildStatus;
  error: string | null;
  template: string | null;
}

/** A recipe error as a 400 names it. */
export interface RecipeError {
  line: number;
  column: number;
  message: string;
}

/** One frame of `/v1/events/stream`. */
export interface LifecycleEvent {
  event: string;
  resource?: { id: string; type: string };
  sandbox?: Capsule;
  metadata?: Record<string, unknown>;
  outcome?: string;
  error?: string;
  timestamp: string;
}
