#include "subprocess.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

extern char** environ;

namespace cairn::mapreduce {
namespace {

struct Pipe {
  int fd[2] = {-1, -1};
  ~Pipe() { closeBoth(); }
  void closeEnd(int i) {
    if (fd[i] >= 0) close(fd[i]);
    fd[i] = -1;
  }
  void closeBoth() {
    closeEnd(0);
    closeEnd(1);
  }
};

// The last non-empty line of a command's stderr, for error messages.
std::string lastLine(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  size_t nl = text.rfind('\n');
  if (nl != std::string::npos) text = text.substr(nl + 1);
  if (text.size() > 300) text = text.substr(0, 300) + "...";
  return text;
}

}  // namespace

Status runCommand(const std::string& command, const std::vector<std::string>& env,
                  const std::function<Status(const WriteInput&)>& feed,
                  const std::function<Status(std::string_view)>& line, const Cancelled& cancelled) {
  Pipe in, out, err;
  for (Pipe* p : {&in, &out, &err}) {
    if (pipe2(p->fd, O_CLOEXEC) != 0)
      return Status::ioError(fmt::format("pipe: {}", strerror(errno)));
  }
  // Everything the child needs is built before fork: a threaded process may only call
  // async-signal-safe functions between fork and exec.
  std::vector<std::string> envStrings;
  for (char** e = environ; *e != nullptr; ++e) envStrings.emplace_back(*e);
  envStrings.insert(envStrings.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (auto& e : envStrings) envp.push_back(e.data());
  envp.push_back(nullptr);
  const char* argv[] = {"/bin/sh", "-c", command.c_str(), nullptr};

  pid_t pid = fork();
  if (pid < 0) return Status::ioError(fmt::format("fork: {}", strerror(errno)));
  if (pid == 0) {
    setpgid(0, 0);  // its own process group: a kill reaches every process of a pipeline
    dup2(in.fd[0], 0);
    dup2(out.fd[1], 1);
    dup2(err.fd[1], 2);
    execve("/bin/sh", const_cast<char**>(argv), envp.data());
    _exit(127);
  }
  in.closeEnd(0);
  out.closeEnd(1);
  err.closeEnd(1);

  Status fed;
  int inFd = in.fd[1];
  std::thread feeder([&]() {
    WriteInput write = [inFd](std::string_view bytes) {
      while (!bytes.empty()) {
        ssize_t n = ::write(inFd, bytes.data(), bytes.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;  // EPIPE: the command stopped reading
        bytes.remove_prefix(static_cast<size_t>(n));
      }
      return true;
    };
    fed = feed(write);
    in.closeEnd(1);
  });

  Status handled;
  std::string pending, errText;
  pollfd fds[2] = {{out.fd[0], POLLIN, 0}, {err.fd[0], POLLIN, 0}};
  char buf[1 << 16];
  while (fds[0].fd >= 0 || fds[1].fd >= 0) {
    if (handled.ok() && cancelled && cancelled()) {
      handled = Status::unavailable("cancelled: the job ended");
      kill(-pid, SIGKILL);
    }
    int ready = poll(fds, 2, cancelled ? 200 : -1);
    if (ready < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        fds[i].fd = -1;
        continue;
      }
      if (i == 1) {
        errText.append(buf, static_cast<size_t>(n));
        if (errText.size() > 8192) errText.erase(0, errText.size() - 4096);
        continue;
      }
      if (!handled.ok()) continue;  // drain, so that the command can finish
      pending.append(buf, static_cast<size_t>(n));
      size_t from = 0;
      for (size_t nl; handled.ok() && (nl = pending.find('\n', from)) != std::string::npos;
           from = nl + 1) {
        handled = line(std::string_view(pending).substr(from, nl - from));
      }
      pending.erase(0, from);
      if (!handled.ok()) kill(-pid, SIGKILL);
    }
  }
  if (handled.ok() && !pending.empty()) handled = line(pending);
  feeder.join();
  if (!fed.ok()) kill(-pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!fed.ok()) return fed;
  if (!handled.ok()) return handled;
  std::string tail = lastLine(errText);
  std::string suffix = tail.empty() ? "" : ": " + tail;
  if (WIFSIGNALED(status)) {
    return Status::ioError(
        fmt::format("`{}` was killed by signal {}{}", command, WTERMSIG(status), suffix));
  }
  if (WEXITSTATUS(status) != 0) {
    return Status::ioError(
        fmt::format("`{}` exited with status {}{}", command, WEXITSTATUS(status), suffix));
  }
  return Status::OK();
}

}  // namespace cairn::mapreduce
