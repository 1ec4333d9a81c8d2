/*
 * Slipway's SPANK plugin: `srun --container-image=REF` (pyxis's options and meanings) on Slurm 22.05+.
 *
 * The plugin is a thin shim; the work is Slipway's (`slipway slurm container|cleanup`, a static binary the
 * plugin fork/execs, so no Swift runtime enters slurmd or slurmstepd):
 *
 *   init              registers the options in every context (srun, sbatch/salloc, slurmstepd).
 *   init_post_opt     (slurmstepd, root, as soon as the options are known) forks a child that takes the user's
 *                     ids to open the user's registry credentials and check the mount sources, then starts
 *                     `slipway slurm container` as root: it asks the registry for the image with those
 *                     credentials (and no others), pulls what the site's store lacks, builds the root filesystem
 *                     once for the node and step, creates a container that owns a mount namespace, and prints
 *                     the namespace owner's pid, the workdir and the image's environment.
 *   user_init         collects that answer. Errors are kept and reported by task_init (these callbacks' errors
 *                     do not reach srun).
 *   task_init_privileged (each task, root) joins that mount namespace and sets the image's environment
 *                     (--container-env names keep the host's values), before Slurm resolves the command.
 *   task_init         (each task, as the user) reports a failed preparation (the task exits before exec),
 *                     changes to the workdir and, with --container-remap-root, enters a user namespace in
 *                     which the user is root.
 *   exit              (slurmstepd) removes an unnamed container; job_epilog (slurmd) removes the job's named ones.
 *
 * plugstack.conf arguments: slipway=PATH store=DIR [stores=DIR:DIR...] [runtime_path=DIR] [mode=unpacked|lazy|sif]
 *   [plain_http=0|1] [registry_mirror=VALUE] [mount_home=0|1] [remap_root=0|1] [writable=0|1] [runtime=runc|crun|PATH]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <slurm/spank.h>

SPANK_PLUGIN(slipway, 1);

#define BATCH_STEP 0xfffffffbU
#define EXTERN_STEP 0xfffffffcU
#define INTERACTIVE_STEP 0xfffffffaU
#define MAX_OUTPUT (4 << 20)
#define MAX_ERROR 16384

struct config {
	char slipway[4096];
	char store[4096];
	char stores[8192]; /* colon-separated stores users may choose with --container-store */
	char runtime_path[4096];
	char mode[16];
	char registry_mirror[1024];
	char runtime[4096];
	int plain_http, mount_home, remap_root, writable;
};

struct options {
	char *image, *mounts, *workdir, *name, *env, *mode, *store;
	int mount_home, remap_root, writable, entrypoint; /* -1: not given */
};

struct step {
	int active;               /* this step runs in a container */
	int failed;               /* preparation failed: `error` says why */
	char error[MAX_ERROR];
	char state[4096];         /* the container's directory on this node */
	int named;
	pid_t keeper;             /* the process whose mount namespace the tasks join */
	char workdir[4096];
	char **environment;       /* the image's K=V, NULL-terminated */
	uid_t uid;
	gid_t gid;
};

static struct config config;
static struct options options = { .mount_home = -1, .remap_root = -1, .writable = -1, .entrypoint = -1 };
static struct step step;

/* ---- messages ---------------------------------------------------------------------------------------- */

static void fail(const char *format, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *format, ...)
{
	va_list arguments;
	va_start(arguments, format);
	vsnprintf(step.error, sizeof(step.error), format, arguments);
	va_end(arguments);
	step.failed = 1;
}

/* ---- configuration (plugstack.conf arguments) -------------------------------------------------------- */

static int copy_value(char *destination, size_t size, const char *value, const char *key)
{
	if (strlen(value) >= size) {
		slurm_error("slipway: plugstack.conf: %s is too long", key);
		return -1;
	}
	strcpy(destination, value);
	return 0;
}

static int parse_config(int ac, char **av)
{
	memset(&config, 0, sizeof(config));
	strcpy(config.slipway, "/usr/local/bin/slipway");
	strcpy(config.store, "/var/lib/slipway");
	strcpy(config.runtime_path, "/run/slipway");
	strcpy(config.mode, "unpacked");
	config.writable = 1;
	for (int i = 0; i < ac; i++) {
		char *equals = strchr(av[i], '=');
		if (!equals) {
			slurm_error("slipway: plugstack.conf: argument %s is not KEY=VALUE", av[i]);
			return -1;
		}
		size_t length = (size_t)(equals - av[i]);
		const char *value = equals + 1;
#define KEY(name) (length == strlen(name) && strncmp(av[i], name, length) == 0)
		int rc = 0;
		if (KEY("slipway")) rc = copy_value(config.slipway, sizeof(config.slipway), value, "slipway");
		else if (KEY("store")) rc = copy_value(config.store, sizeof(config.store), value, "store");
		else if (KEY("stores")) rc = copy_value(config.stores, sizeof(config.stores), value, "stores");
		else if (KEY("runtime_path")) rc = copy_value(config.runtime_path, sizeof(config.runtime_path), value, "runtime_path");
		else if (KEY("mode")) rc = copy_value(config.mode, sizeof(config.mode), value, "mode");
		else if (KEY("registry_mirror")) rc = copy_value(config.registry_mirror, sizeof(config.registry_mirror), value, "registry_mirror");
		else if (KEY("runtime")) rc = copy_value(config.runtime, sizeof(config.runtime), value, "runtime");
		else if (KEY("plain_http")) config.plain_http = atoi(value) != 0;
		else if (KEY("mount_home")) config.mount_home = atoi(value) != 0;
		else if (KEY("remap_root")) config.remap_root = atoi(value) != 0;
		else if (KEY("writable")) config.writable = atoi(value) != 0;
		else {
			slurm_error("slipway: plugstack.conf: unknown argument %s", av[i]);
			return -1;
		}
#undef KEY
		if (rc) return -1;
	}
	return 0;
}

/* ---- options ----------------------------------------------------------------------------------------- */

/* A value given twice must be the same value (an #SBATCH line and the command line, say). */
static int set_value(char **slot, const char *value, const char *flag)
{
	if (!value || !*value) {
		slurm_error("slipway: %s needs a value", flag);
		return -1;
	}
	if (*slot && strcmp(*slot, value) != 0) {
		slurm_error("slipway: %s given twice with different values ('%s' and '%s'); give it once", flag, *slot, value);
		return -1;
	}
	if (!*slot && !(*slot = strdup(value))) return -1;
	return 0;
}

static int set_switch(int *slot, int value, const char *on, const char *off)
{
	if (*slot != -1 && *slot != value) {
		slurm_error("slipway: both %s and %s given; give one", on, off);
		return -1;
	}
	*slot = value;
	return 0;
}

enum { O_IMAGE = 1, O_MOUNTS, O_WORKDIR, O_NAME, O_ENV, O_MODE, O_STORE, O_HOME, O_NO_HOME, O_REMAP, O_NO_REMAP,
       O_WRITABLE, O_READONLY, O_ENTRYPOINT, O_NO_ENTRYPOINT };

static int option_callback(int val, const char *optarg, int remote)
{
	(void)remote;
	switch (val) {
	case O_IMAGE: return set_value(&options.image, optarg, "--container-image");
	case O_MOUNTS: return set_value(&options.mounts, optarg, "--container-mounts");
	case O_WORKDIR: return set_value(&options.workdir, optarg, "--container-workdir");
	case O_NAME: return set_value(&options.name, optarg, "--container-name");
	case O_ENV: return set_value(&options.env, optarg, "--container-env");
	case O_MODE:
		if (optarg && strcmp(optarg, "unpacked") && strcmp(optarg, "lazy") && strcmp(optarg, "sif")) {
			slurm_error("slipway: --container-mode is unpacked, lazy or sif, not '%s'", optarg);
			return -1;
		}
		return set_value(&options.mode, optarg, "--container-mode");
	case O_STORE: return set_value(&options.store, optarg, "--container-store");
	case O_HOME: return set_switch(&options.mount_home, 1, "--container-mount-home", "--no-container-mount-home");
	case O_NO_HOME: return set_switch(&options.mount_home, 0, "--container-mount-home", "--no-container-mount-home");
	case O_REMAP: return set_switch(&options.remap_root, 1, "--container-remap-root", "--no-container-remap-root");
	case O_NO_REMAP: return set_switch(&options.remap_root, 0, "--container-remap-root", "--no-container-remap-root");
	case O_WRITABLE: return set_switch(&options.writable, 1, "--container-writable", "--container-readonly");
	case O_READONLY: return set_switch(&options.writable, 0, "--container-writable", "--container-readonly");
	case O_ENTRYPOINT:
		slurm_error("slipway: --container-entrypoint is not supported: the command runs directly, as with pyxis's "
			    "default (--no-container-entrypoint); name the entrypoint in the command instead");
		return -1;
	case O_NO_ENTRYPOINT: return set_switch(&options.entrypoint, 0, "--container-entrypoint", "--no-container-entrypoint");
	}
	return -1;
}

static struct spank_option option_table[] = {
	{ "container-image", "[REGISTRY/]IMAGE[:TAG]", "[slipway] the image to run the tasks in (as pyxis)", 1, O_IMAGE, option_callback },
	{ "container-mounts", "SRC[:DST[:FLAGS]][,...]", "[slipway] bind mounts; FLAGS ro or rw (joined with +)", 1, O_MOUNTS, option_callback },
	{ "container-workdir", "PATH", "[slipway] working directory in the container (default: the image's)", 1, O_WORKDIR, option_callback },
	{ "container-name", "NAME", "[slipway] keep the container for later steps of the job under NAME", 1, O_NAME, option_callback },
	{ "container-env", "NAME[,NAME...]", "[slipway] keep the host's value of these variables over the image's", 1, O_ENV, option_callback },
	{ "container-mode", "unpacked|lazy|sif", "[slipway] root filesystem: layer cache overlay, lazy mount, or SIF", 1, O_MODE, option_callback },
	{ "container-store", "DIR", "[slipway] the Slipway store to use (one the site allows)", 1, O_STORE, option_callback },
	{ "container-mount-home", NULL, "[slipway] bind mount the user's home directory", 0, O_HOME, option_callback },
	{ "no-container-mount-home", NULL, "[slipway] do not bind mount the home directory", 0, O_NO_HOME, option_callback },
	{ "container-remap-root", NULL, "[slipway] be root in the container (a user namespace)", 0, O_REMAP, option_callback },
	{ "no-container-remap-root", NULL, "[slipway] run as yourself in the container", 0, O_NO_REMAP, option_callback },
	{ "container-writable", NULL, "[slipway] writable root filesystem (changes are thrown away)", 0, O_WRITABLE, option_callback },
	{ "container-readonly", NULL, "[slipway] read-only root filesystem", 0, O_READONLY, option_callback },
	{ "container-entrypoint", NULL, "[slipway] (not supported; see --no-container-entrypoint)", 0, O_ENTRYPOINT, option_callback },
	{ "no-container-entrypoint", NULL, "[slipway] do not run the image's entrypoint (the default)", 0, O_NO_ENTRYPOINT, option_callback },
	SPANK_OPTIONS_TABLE_END
};

int slurm_spank_init(spank_t sp, int ac, char **av)
{
	spank_context_t context = spank_context();
	if (parse_config(ac, av)) return -1;
	if (context != S_CTX_LOCAL && context != S_CTX_REMOTE && context != S_CTX_ALLOCATOR) return 0;
	for (struct spank_option *option = option_table; option->name; option++) {
		if (spank_option_register(sp, option) != ESPANK_SUCCESS) {
			slurm_error("slipway: cannot register --%s", option->name);
			return -1;
		}
	}
	return 0;
}

/* ---- running the helper -------------------------------------------------------------------------------- */

struct argv_builder { char **items; int count, capacity; };

static void add(struct argv_builder *argv, const char *item)
{
	if (argv->count + 2 > argv->capacity) {
		argv->capacity = argv->capacity ? argv->capacity * 2 : 32;
		argv->items = realloc(argv->items, (size_t)argv->capacity * sizeof(char *));
		if (!argv->items) abort();
	}
	argv->items[argv->count++] = strdup(item);
	argv->items[argv->count] = NULL;
}

static void add_pair(struct argv_builder *argv, const char *flag, const char *value) { add(argv, flag); add(argv, value); }

static void free_argv(struct argv_builder *argv)
{
	for (int i = 0; i < argv->count; i++) free(argv->items[i]);
	free(argv->items);
}

/* What the user must be able to reach, checked with the user's own ids in the helper's parent process. */
struct user_access {
	uid_t uid;
	gid_t gid;
	gid_t *groups;
	int group_count;
	const char *credentials;  /* the docker config to open for the helper (missing: anonymous) */
	char **sources;           /* bind mount sources that must exist */
	int source_count;
};

struct helper_run { pid_t child; int out, err; };

static void exec_helper(char **argv, int output, int errors, int keep)
{
	static char *environment[] = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", NULL };
	int null = open("/dev/null", O_RDONLY);
	if (null < 0 || dup2(null, 0) < 0 || dup2(output, 1) < 0 || dup2(errors, 2) < 0) _exit(127);
	if (keep >= 0 && keep != 3 && dup2(keep, 3) < 0) _exit(127);
	close_range(keep >= 0 ? 4 : 3, ~0U, 0);
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int number = 1; number < NSIG; number++) signal(number, SIG_DFL);
	execve(argv[0], argv, environment);
	dprintf(2, "cannot run %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

/*
 * In the forked child, with the user's ids: opens the credentials (the descriptor for the helper, or -1 when
 * there are none) and checks the mount sources. Failures are written to `errors` and end the child.
 */
static int check_user_access(const struct user_access *access, int errors)
{
	if (setgroups((size_t)access->group_count, access->groups) || setresgid((gid_t)-1, access->gid, (gid_t)-1)
	    || setresuid((uid_t)-1, access->uid, (uid_t)-1)) {
		dprintf(errors, "cannot take the user's ids: %s", strerror(errno));
		_exit(1);
	}
	int credentials = -1;
	if (access->credentials) {
		credentials = open(access->credentials, O_RDONLY | O_CLOEXEC);
		if (credentials < 0 && errno != ENOENT && errno != ENOTDIR) {
			dprintf(errors, "cannot read your registry credentials %s: %s", access->credentials, strerror(errno));
			_exit(1);
		}
	}
	struct stat info;
	for (int i = 0; i < access->source_count; i++)
		if (stat(access->sources[i], &info) != 0) {
			dprintf(errors, "--container-mounts: the mount source %s does not exist or is not yours to read (%s)",
				access->sources[i], strerror(errno));
			_exit(1);
		}
	if (setresuid(0, 0, 0) || setresgid(0, 0, 0) || setgroups(0, NULL)) _exit(126);
	return credentials;
}

/*
 * Starts the helper as root with the given argv. The helper is a grandchild in a session of its own: Slurm's
 * process tracking kills whatever descends from slurmstepd when a step ends, and neither a container that
 * outlives the step nor the cleanup that runs after it may die with it. `collect_helper` reads its answer.
 */
static int spawn_helper(char **argv, const struct user_access *access, struct helper_run *run)
{
	int out[2], err[2];
	if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) return -1;
	pid_t child = fork();
	if (child < 0) return -1;
	if (child == 0) {
		int keep = access ? check_user_access(access, err[1]) : -1;
		/* slurmstepd may run with the user's effective ids (user_init): the helper runs as root. */
		if (setresuid(0, 0, 0) || setresgid(0, 0, 0) || setgroups(0, NULL)) _exit(126);
		setsid();
		pid_t grandchild = fork();
		if (grandchild < 0) _exit(125);
		if (grandchild > 0) _exit(0);
		exec_helper(argv, out[1], err[1], keep);
	}
	close(out[1]);
	close(err[1]);
	*run = (struct helper_run){ child, out[0], err[0] };
	return 0;
}

/*
 * Reads the helper's stdout and stderr to their ends: the container helper closes both once it is ready (and
 * lives on), any other helper when it exits. Returns 0, or -1 when the child failed (its message is in errors).
 */
static int collect_helper(struct helper_run *run, char **output, size_t *output_size, char *errors, size_t errors_size)
{
	size_t used = 0, capacity = 65536, error_used = 0;
	char *buffer = malloc(capacity);
	struct pollfd fds[2] = { { run->out, POLLIN, 0 }, { run->err, POLLIN, 0 } };
	int open_count = 2;
	while (open_count > 0 && buffer) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR) continue;
			break;
		}
		if (fds[0].revents) {
			if (used + 4096 > capacity && capacity < MAX_OUTPUT) buffer = realloc(buffer, capacity *= 2);
			ssize_t n = buffer && used + 4096 <= capacity ? read(run->out, buffer + used, 4096) : 0;
			if (n > 0) used += (size_t)n;
			else if (n == 0 || errno != EINTR) { fds[0].fd = -1; open_count--; }
		}
		if (fds[1].revents) {
			char scratch[4096];
			ssize_t n = read(run->err, scratch, sizeof(scratch));
			if (n > 0) {
				size_t take = (size_t)n < errors_size - 1 - error_used ? (size_t)n : errors_size - 1 - error_used;
				memcpy(errors + error_used, scratch, take);
				error_used += take;
			} else if (n == 0 || errno != EINTR) { fds[1].fd = -1; open_count--; }
		}
	}
	errors[error_used] = '\0';
	close(run->out);
	close(run->err);
	int status = 0;
	while (waitpid(run->child, &status, 0) < 0 && errno == EINTR) {}
	*output = buffer;
	*output_size = used;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* ---- slurmstepd: preparing the container --------------------------------------------------------------- */

static int allowed_store(const char *store)
{
	if (strcmp(store, config.store) == 0) return 1;
	size_t length = strlen(store);
	for (const char *p = config.stores; *p;) {
		const char *end = strchr(p, ':');
		size_t item = end ? (size_t)(end - p) : strlen(p);
		if (item == length && strncmp(p, store, length) == 0) return 1;
		p += item + (end ? 1 : 0);
	}
	return 0;
}

static char *job_env(spank_t sp, const char *name, char *buffer, int size)
{
	return spank_getenv(sp, name, buffer, size) == ESPANK_SUCCESS ? buffer : NULL;
}

/* --container-mounts=SRC[:DST[:FLAGS]],... as --bind SRC:DST[:ro]; the sources go to `sources`, for the check with
 * the user's rights. */
static int add_mounts(struct argv_builder *argv, const char *mounts, struct argv_builder *sources)
{
	char *copy = strdup(mounts), *saveptr = NULL;
	for (char *item = strtok_r(copy, ",", &saveptr); item; item = strtok_r(NULL, ",", &saveptr)) {
		char *source = item, *destination = strchr(item, ':'), *flags = NULL;
		if (destination) {
			*destination++ = '\0';
			flags = strchr(destination, ':');
			if (flags) *flags++ = '\0';
		}
		if (!destination || !*destination) destination = source;
		if (*source != '/' || *destination != '/') {
			fail("--container-mounts: %s: give absolute paths (SRC[:DST[:FLAGS]])", item);
			break;
		}
		add(sources, source);
		int read_only = 0;
		if (flags) {
			char *flag_save = NULL;
			for (char *flag = strtok_r(flags, "+", &flag_save); flag; flag = strtok_r(NULL, "+", &flag_save)) {
				if (!strcmp(flag, "ro")) read_only = 1;
				else if (!strcmp(flag, "rw")) read_only = 0;
				else if (strcmp(flag, "private") && strcmp(flag, "rprivate") && strcmp(flag, "rbind") && strcmp(flag, "bind")) {
					fail("--container-mounts: %s: unknown flag %s (use ro or rw)", source, flag);
					break;
				}
			}
		}
		if (step.failed) break;
		char bind[8200];
		snprintf(bind, sizeof(bind), "%s:%s%s", source, destination, read_only ? ":ro" : "");
		add_pair(argv, "--bind", bind);
	}
	free(copy);
	return step.failed ? -1 : 0;
}

static void parse_records(char *output, size_t size)
{
	int ready = 0, count = 0;
	for (size_t i = 0; i < size;) {
		char *record = output + i;
		size_t length = strnlen(record, size - i);
		if (i + length >= size) break;
		if (!strncmp(record, "env=", 4)) count++;
		i += length + 1;
	}
	step.environment = calloc((size_t)count + 1, sizeof(char *));
	count = 0;
	for (size_t i = 0; i < size && step.environment;) {
		char *record = output + i;
		size_t length = strnlen(record, size - i);
		if (i + length >= size) break;
		if (!strncmp(record, "keeper=", 7)) step.keeper = (pid_t)atol(record + 7);
		else if (!strncmp(record, "workdir=", 8)) snprintf(step.workdir, sizeof(step.workdir), "%s", record + 8);
		else if (!strncmp(record, "env=", 4)) step.environment[count++] = strdup(record + 4);
		else if (!strcmp(record, "ready")) ready = 1;
		i += length + 1;
	}
	if (!ready || step.keeper <= 0) fail("the container helper did not finish its answer");
}

static int node_name(char *buffer, size_t size)
{
	if (gethostname(buffer, size) != 0) return -1;
	buffer[size - 1] = '\0';
	char *dot = strchr(buffer, '.');
	if (dot) *dot = '\0';
	return 0;
}

static int safe_name(const char *name)
{
	if (!*name || strlen(name) > 128) return 0;
	for (const char *c = name; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-' || *c == '_' || *c == '.')) return 0;
	return name[0] != '.';
}

static struct helper_run preparation = { -1, -1, -1 };

/* Starts the container's helper (slurmstepd, root, once options are known); `finish` collects its answer. */
static void start(spank_t sp)
{
	uint32_t job = 0, stepid = 0;
	char node[256], credentials_path[4096], value[4096];
	spank_get_item(sp, S_JOB_ID, &job);
	spank_get_item(sp, S_JOB_STEPID, &stepid);
	spank_get_item(sp, S_JOB_UID, &step.uid);
	spank_get_item(sp, S_JOB_GID, &step.gid);
	if (node_name(node, sizeof(node))) { fail("cannot read this node's name: %s", strerror(errno)); return; }

	/* A name may end in :MODE as with pyxis; Slipway keeps named containers for the job. */
	char name[256] = "";
	if (options.name) {
		snprintf(name, sizeof(name), "%s", options.name);
		char *colon = strchr(name, ':');
		if (colon) *colon = '\0';
		if (!safe_name(name)) { fail("--container-name %s: use letters, digits, '-', '_' and '.'", options.name); return; }
	}
	step.named = name[0] != '\0';
	int length = step.named
		? snprintf(step.state, sizeof(step.state), "%s/%s/job-%u/name-%s", config.runtime_path, node, job, name)
		: snprintf(step.state, sizeof(step.state), "%s/%s/job-%u/step-%u", config.runtime_path, node, job, stepid);
	if (length < 0 || (size_t)length >= sizeof(step.state)) { fail("runtime_path %s is too long", config.runtime_path); return; }

	const char *store = options.store ? options.store : config.store;
	if (!allowed_store(store)) {
		fail("--container-store %s is not one of the stores this site allows (%s%s%s)", store, config.store,
		     config.stores[0] ? ", " : "", config.stores);
		return;
	}
	const char *mode = options.mode ? options.mode : config.mode;

	struct passwd *user = getpwuid(step.uid);
	if (!user) { fail("user %u has no passwd entry on this node", (unsigned)step.uid); return; }

	struct argv_builder argv = { 0 }, sources = { 0 };
	add(&argv, config.slipway);
	add(&argv, "slurm");
	add(&argv, "container");
	add(&argv, "--quiet");
	add_pair(&argv, "--store", store);
	add_pair(&argv, "--state", step.state);
	char id[512];
	snprintf(id, sizeof(id), "slipway-slurm-%s-%u-%s%s", node, job, step.named ? "name-" : "", step.named ? name : "");
	if (!step.named) snprintf(id + strlen(id), sizeof(id) - strlen(id), "%u", stepid);
	add_pair(&argv, "--id", id);
	add_pair(&argv, "--mode", mode);
	if (options.image) add_pair(&argv, "--image", options.image);
	if (options.workdir) add_pair(&argv, "--workdir", options.workdir);
	if (config.plain_http) add(&argv, "--plain-http");
	if (config.registry_mirror[0]) add_pair(&argv, "--registry-mirror", config.registry_mirror);
	if (config.runtime[0]) add_pair(&argv, "--runtime", config.runtime);
	if ((options.writable == -1 ? config.writable : options.writable) == 0) add(&argv, "--read-only");
	if (options.mounts && add_mounts(&argv, options.mounts, &sources)) goto done;
	if ((options.mount_home == -1 ? config.mount_home : options.mount_home) == 1) {
		char bind[8200];
		snprintf(bind, sizeof(bind), "%s:%s", user->pw_dir, user->pw_dir);
		add_pair(&argv, "--bind", bind);
	}
	if (stepid == BATCH_STEP) {
		/* The batch script lives in slurmd's spool directory: make that directory visible at its own path. */
		int argc = 0;
		char **job_argv = NULL;
		if (spank_get_item(sp, S_JOB_ARGV, &argc, &job_argv) == ESPANK_SUCCESS && argc > 0 && job_argv[0][0] == '/') {
			char directory[4096];
			snprintf(directory, sizeof(directory), "%s", job_argv[0]);
			char *slash = strrchr(directory, '/');
			if (slash && slash != directory) {
				*slash = '\0';
				char bind[8200];
				snprintf(bind, sizeof(bind), "%s:%s:ro", directory, directory);
				add_pair(&argv, "--bind", bind);
			}
		}
	}
	if (!step.named) {
		/* An unnamed container ends with its step, even if slurmstepd dies before its exit callback. */
		char watch[64];
		snprintf(watch, sizeof(watch), "%d", (int)getpid());
		add_pair(&argv, "--watch", watch);
	}
	if (job_env(sp, "DOCKER_CONFIG", value, sizeof(value)))
		snprintf(credentials_path, sizeof(credentials_path), "%s/config.json", value);
	else
		snprintf(credentials_path, sizeof(credentials_path), "%s/.docker/config.json", user->pw_dir);
	/* The helper reads credentials from descriptor 3 when the user's file exists (an empty file otherwise). */
	add_pair(&argv, "--authfile", "/dev/fd/3");

	gid_t *groups = NULL;
	int group_count = 0;
	if (spank_get_item(sp, S_JOB_SUPPLEMENTARY_GIDS, &groups, &group_count) != ESPANK_SUCCESS) { groups = NULL; group_count = 0; }
	struct user_access access = { step.uid, step.gid, groups, group_count, credentials_path, sources.items, sources.count };
	if (spawn_helper(argv.items, &access, &preparation)) fail("cannot start %s: %s", config.slipway, strerror(errno));
done:
	free_argv(&argv);
	free_argv(&sources);
}

static void finish(void)
{
	if (preparation.child <= 0) return;
	char *output = NULL, errors[MAX_ERROR];
	size_t size = 0;
	int status = collect_helper(&preparation, &output, &size, errors, sizeof(errors));
	preparation.child = -1;
	if (status != 0 || size == 0 || output[size - 1] != '\0') {
		size_t length = strlen(errors);
		while (length && (errors[length - 1] == '\n' || errors[length - 1] == ' ')) errors[--length] = '\0';
		fail("%s", errors[0] ? errors : "the container helper ended without an answer");
	} else parse_records(output, size);
	free(output);
}

/* Started as soon as the options are known (root, before slurmstepd's own set-up of the step), so the image is
 * pulled and mounted while slurmstepd works. */
int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
	(void)ac; (void)av;
	if (spank_context() != S_CTX_REMOTE || (!options.image && !options.name)) return 0;
	uint32_t stepid = 0;
	spank_get_item(sp, S_JOB_STEPID, &stepid);
	if (stepid == EXTERN_STEP) return 0;
	step.active = 1;
	start(sp);
	return 0; /* errors reach the user from task_init, where stderr is the task's */
}

int slurm_spank_user_init(spank_t sp, int ac, char **av)
{
	(void)sp; (void)ac; (void)av;
	if (step.active && !step.failed) finish();
	return 0;
}

/* ---- slurmstepd: each task ------------------------------------------------------------------------------ */

static int host_wins(const char *variable)
{
	if (!options.env) return 0;
	size_t length = strcspn(variable, "=");
	for (const char *p = options.env; *p;) {
		size_t item = strcspn(p, ",");
		if (item == length && strncmp(p, variable, length) == 0) return 1;
		p += item + (p[item] == ',' ? 1 : 0);
	}
	return 0;
}

static void make_directories(const char *path)
{
	char partial[4096];
	snprintf(partial, sizeof(partial), "%s", path);
	for (char *slash = strchr(partial + 1, '/');; slash = strchr(slash + 1, '/')) {
		if (slash) *slash = '\0';
		if (mkdir(partial, 0755) != 0 && errno != EEXIST) return;
		if (!slash) return;
		*slash = '/';
	}
}

int slurm_spank_task_init_privileged(spank_t sp, int ac, char **av)
{
	(void)ac; (void)av;
	if (!step.active || step.failed) return 0;
	char path[64], cwd[4096];
	if (!getcwd(cwd, sizeof(cwd))) cwd[0] = '\0';
	snprintf(path, sizeof(path), "/proc/%d/ns/mnt", (int)step.keeper);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWNS) != 0) {
		fail("cannot enter the container (%s): %s", path, strerror(errno));
		if (fd >= 0) close(fd);
		return 0;
	}
	close(fd);
	/*
	 * Slurm changes into the job's directory next, from inside the container, and complains where the image has
	 * no such directory. In a writable root it is made (an empty directory in the throwaway layer); task_init
	 * changes to the container's working directory anyway.
	 */
	if (cwd[0] == '/' && cwd[1]) make_directories(cwd);
	for (char **variable = step.environment; variable && *variable; variable++) {
		if (host_wins(*variable)) continue;
		char *equals = strchr(*variable, '=');
		if (!equals) continue;
		*equals = '\0';
		spank_setenv(sp, *variable, equals + 1, 1);
		*equals = '=';
	}
	return 0;
}

int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
	(void)sp; (void)ac; (void)av;
	if (!step.active) return 0;
	/* An `optional` plugin's failure does not stop the task: end it here, before it execs anything. */
	if (step.failed) {
		dprintf(2, "slipway: %s\n", step.error);
		_exit(1);
	}
	if (chdir(step.workdir[0] ? step.workdir : "/") != 0) {
		dprintf(2, "slipway: cannot change to the working directory %s in the container: %s\n", step.workdir, strerror(errno));
		_exit(1);
	}
	if ((options.remap_root == -1 ? config.remap_root : options.remap_root) == 1) {
		uid_t uid = getuid();
		gid_t gid = getgid();
		char map[64];
		/* Slurm's change of ids left the task non-dumpable, which makes its /proc/self files root's. */
		prctl(PR_SET_DUMPABLE, 1);
		int ok = unshare(CLONE_NEWUSER) == 0;
		int fd;
		if (ok && (fd = open("/proc/self/setgroups", O_WRONLY)) >= 0) { ok = write(fd, "deny", 4) == 4; close(fd); }
		snprintf(map, sizeof(map), "0 %u 1", (unsigned)uid);
		if (ok && (fd = open("/proc/self/uid_map", O_WRONLY)) >= 0) { ok = write(fd, map, strlen(map)) == (ssize_t)strlen(map); close(fd); } else ok = 0;
		snprintf(map, sizeof(map), "0 %u 1", (unsigned)gid);
		if (ok && (fd = open("/proc/self/gid_map", O_WRONLY)) >= 0) { ok = write(fd, map, strlen(map)) == (ssize_t)strlen(map); close(fd); } else ok = 0;
		if (!ok) {
			dprintf(2, "slipway: --container-remap-root: cannot enter a user namespace: %s\n", strerror(errno));
			_exit(1);
		}
	}
	return 0;
}

/* ---- the end of a step, and of a job --------------------------------------------------------------------- */

static void cleanup(char **extra)
{
	struct argv_builder argv = { 0 };
	add(&argv, config.slipway);
	add(&argv, "slurm");
	add(&argv, "cleanup");
	if (config.runtime[0]) add_pair(&argv, "--runtime", config.runtime);
	for (char **item = extra; *item; item++) add(&argv, *item);
	char *output = NULL, errors[MAX_ERROR] = "";
	size_t size = 0;
	struct helper_run run;
	int status = spawn_helper(argv.items, NULL, &run);
	if (status == 0) status = collect_helper(&run, &output, &size, errors, sizeof(errors));
	if (status != 0 || errors[0]) slurm_error("slipway: cleanup (%s) failed: %s", argv.items[argv.count - 1], errors[0] ? errors : strerror(errno));
	free(output);
	free_argv(&argv);
}

int slurm_spank_exit(spank_t sp, int ac, char **av)
{
	(void)sp; (void)ac; (void)av;
	if (spank_context() != S_CTX_REMOTE || !step.active || step.named || !step.state[0]) return 0;
	char *extra[] = { "--state", step.state, NULL };
	cleanup(extra);
	return 0;
}

int slurm_spank_job_epilog(spank_t sp, int ac, char **av)
{
	if (parse_config(ac, av)) return 0;
	uint32_t job = 0;
	char node[256], directory[4400], number[32];
	if (spank_get_item(sp, S_JOB_ID, &job) != ESPANK_SUCCESS || node_name(node, sizeof(node))) return 0;
	snprintf(directory, sizeof(directory), "%s/%s", config.runtime_path, node);
	struct stat info;
	if (stat(directory, &info) != 0) return 0;
	snprintf(number, sizeof(number), "%u", job);
	/* The job's named containers, and any container on the node whose supervisor died (a crashed slurmstepd's). */
	char *extra[] = { "--node-directory", directory, "--job", number, "--stale", NULL };
	cleanup(extra);
	return 0;
}
