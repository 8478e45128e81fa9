#pragma once
// The `cairn` command line: each command is a function over a Client on the caller's
// event loop. They print results to `out`, a one-line error to `err`, and return the
// process exit status.

#include <kj/async.h>

#include <cstdio>
#include <string>
#include <vector>

#include "certs.h"
#include "client.h"
#include "file_cache.h"
#include "units.h"

namespace cairn {

// The exit status when standard output's reader went away (128 + SIGPIPE, as a shell
// shows for a command that SIGPIPE ended); nothing is printed.
constexpr int PIPE_CLOSED = 141;

struct CliContext {
  Client& client;
  FileCache& files;
  kj::WaitScope& waitScope;
  FILE* out = stdout;
  FILE* err = stderr;
  bool progress = false;  // draw progress for long transfers (a terminal is attached)
};

// `cairn admin ca init DIR` and `cairn admin cert issue`: no cluster needed.
int cmdCaInit(const std::string& dir, int days);
int cmdCertIssue(const std::string& caDir, const CertRequest& request, const std::string& out);

int cmdPut(CliContext& c, const std::string& local, const std::string& path, uint8_t replication,
           bool force);
int cmdGet(CliContext& c, const std::string& path, const std::string& local);
// A copy inside the cluster, made by the chunkservers (no byte passes through here).
int cmdCp(CliContext& c, const std::string& src, const std::string& dst, bool force);
int cmdCat(CliContext& c, const std::string& path);
// `cairn append PATH`: each line of `in` (or each `recordSize` bytes) becomes a record
// (client/record_io.h), sent by record append in batches of up to 1 MiB; the file is made if
// missing. Done means synced on every replica.
int cmdAppend(CliContext& c, const std::string& path, size_t recordSize, FILE* in);
// `cairn cat --records PATH`: each record's payload once, in file order.
int cmdCatRecords(CliContext& c, const std::string& path);
int cmdLs(CliContext& c, const std::string& path, bool longFormat, bool json);
int cmdStat(CliContext& c, const std::string& path, bool json);
int cmdMkdir(CliContext& c, const std::string& path, bool parents);
int cmdRm(CliContext& c, const std::string& path, bool recursive);
int cmdMv(CliContext& c, const std::string& src, const std::string& dst);
// A snapshot of a file or tree (chunks shared until either side writes). DST may be an
// existing directory: the snapshot goes in it under SRC's name.
int cmdSnapshot(CliContext& c, const std::string& src, const std::string& dst);
int cmdSetrep(CliContext& c, int replication, const std::string& path);
int cmdLocate(CliContext& c, const std::string& path, bool json);
int cmdServers(CliContext& c, bool json);
int cmdTrashList(CliContext& c, bool json);
int cmdTrashRestore(CliContext& c, const std::string& path);
// With `wait`, polls until the chunkserver is drained (or `timeoutSeconds` pass).
int cmdDecommission(CliContext& c, const std::string& address, bool wait, double timeoutSeconds);
int cmdBalance(CliContext& c, double threshold, bool wait, double timeoutSeconds);
int cmdHealth(CliContext& c, bool json);
// `cairn admin masters`: each master with its role, epoch and how far behind the active
// one it is; JSON: an array of {address, role, epoch, lsn, behind}. Exit 1 when none is
// active.
int cmdMasters(CliContext& c, bool json);
// `cairn admin failover`: the active master hands over to a standby in sync.
int cmdFailover(CliContext& c);
// `cairn admin safemode get|enter|leave`: prints "safe mode: on|off" (and who put it on).
int cmdSafeMode(CliContext& c, const std::string& action, bool json);

// `cairn fsck PATH`: every file under PATH whose chunks lack replicas, with their replicas
// and a summary; 1 when a chunk is missing or corrupt.
int cmdFsck(CliContext& c, const std::string& path, bool json);
// `cairn admin report`: capacity, files, chunk health, safe mode, and each chunkserver.
int cmdReport(CliContext& c, bool json);
// `cairn df`: the cluster's size, use and room, as df shows a file system.
int cmdDf(CliContext& c, bool json);
// `cairn du`: bytes under each entry of PATH (or PATH itself with `summary`), and what they
// take with their replicas.
int cmdDu(CliContext& c, const std::string& path, bool summary, bool human, bool json);

// Shared by the command files: a one-line error as coreutils prints it (the errno a local
// file system would give; the master's reason follows for cluster failures, bad arguments
// and refused roles), returning 1; a plain one-line error; a path resolved by the master.
int fail(CliContext& c, const std::string& what, const Status& s);
int failText(CliContext& c, const std::string& text);
Result<FileAttr> resolve(CliContext& c, const std::string& path);

// "/a/b/c" -> ("/a/b", "c"); "/" -> ("/", "").
std::pair<std::string, std::string> splitParent(const std::string& path);

}  // namespace cairn
