// libcairn's side of a watched session: the watcher the master calls, what a watch's end
// drops, and the directories whose every name is known (see NamespaceWatcher, watching()).

#include <climits>

#include "client.h"

namespace cairn {

// The watcher the master calls on one session: it forwards to the client while that session
// is the client's current one; its end (the connection's) ends the watch.
class Client::WatcherServer final : public wire::Watcher::Server {
 public:
  WatcherServer(std::shared_ptr<WatchLink> link, uint64_t session, uint64_t id)
      : link(std::move(link)), session(session), id(id) {}
  ~WatcherServer() {
    if (link->client != nullptr) link->client->watchLost(id);
  }

  kj::Promise<void> changed(ChangedContext context) override {
    Client* c = link->client;
    if (c == nullptr || c->sessionNumber != session) return kj::READY_NOW;
    auto p = context.getParams();
    std::vector<std::pair<uint64_t, std::string>> entries;
    entries.reserve(p.getEntries().size());
    for (auto e : p.getEntries()) {
      std::string name(e.getName().cStr(), e.getName().size());
      // A name no directory can hold is nothing kept here or by the kernel.
      if (name.empty() || name.size() > NAME_MAX ||
          name.find_first_of(std::string("/\0", 2)) != std::string::npos) {
        continue;
      }
      entries.emplace_back(e.getParent(), std::move(name));
    }
    std::vector<uint64_t> inodes;
    inodes.reserve(p.getInodes().size());
    for (uint64_t inode : p.getInodes()) inodes.push_back(inode);
    c->changedFromMaster(entries, inodes, p.getAll());
    return kj::READY_NOW;
  }

  kj::Promise<void> ended(EndedContext) override {
    Client* c = link->client;
    if (c != nullptr && c->watchedId == id) {
      c->watchLost(id);
      c->masterFailed(session);  // the next call finds the active master (and watches there)
    }
    return kj::READY_NOW;
  }

 private:
  std::shared_ptr<WatchLink> link;
  uint64_t session;
  uint64_t id;  // of this watch request
};

void Client::watchNamespace(NamespaceWatcher* watcher) { nsWatcher = watcher; }

void Client::startWatch(wire::ClientService::Client& service) {
  if (nsWatcher == nullptr || standbyReads) return;
  uint64_t id = ++nextWatchId;
  auto req = service.watchRequest();
  req.setWatcher(kj::heap<WatcherServer>(watchLink, sessionNumber, id));
  req.send()
      .then(
          [link = watchLink, number = sessionNumber, id](auto&& r) {
            Client* c = link->client;
            if (c != nullptr && c->sessionNumber == number && fromWire(r.getStatus()).ok()) {
              c->watchedId = id;
              c->watchEpoch_++;
            }
          },
          [](kj::Exception&&) {})
      .detach([](kj::Exception&&) {});
}

void Client::watchLost(uint64_t id) {
  if (id == 0 || id != watchedId) return;
  watchedId = 0;
  changedFromMaster({}, {}, true);
}

void Client::changedFromMaster(const std::vector<std::pair<uint64_t, std::string>>& entries,
                               const std::vector<uint64_t>& inodes, bool all) {
  if (all) {
    watchEpoch_++;
    freshDirs.clear();
    dirForgets++;
    layouts.clear();
    knownDirs.clear();
    knownNames = 0;
    if (nsWatcher != nullptr) nsWatcher->allChanged();
  }
  for (auto& [parent, name] : entries) mayExist(parent, name);
  for (uint64_t inode : inodes) {
    forgetDir(inode);
    layouts.erase(inode);
  }
  if (nsWatcher != nullptr && (!entries.empty() || !inodes.empty())) {
    nsWatcher->changed(entries, inodes);
  }
}

void Client::mayExist(uint64_t parent, const std::string& name) {
  auto known = knownDirs.find(parent);
  if (known == knownDirs.end() || known->second.tooBig) return;
  if (known->second.names.insert(name).second && ++knownNames > MAX_KNOWN_NAMES) {
    knownDirs.clear();  // too many to keep: learnt again as lookups miss
    knownNames = 0;
  }
}

void Client::learnDir(uint64_t dir, std::optional<Caller> as) {
  if (knownDirs.size() >= MAX_KNOWN_DIRS) {
    knownDirs.clear();  // as in mayExist
    knownNames = 0;
  }
  uint64_t id = ++nextKnownDir;
  knownDirs[dir].id = id;
  learnPage(dir, id, "", kj::mv(as)).detach([](kj::Exception&&) {});
}

kj::Promise<void> Client::learnPage(uint64_t dir, uint64_t id, std::string after,
                                    std::optional<Caller> as) {
  auto more = kj::heap<bool>(false);
  bool* m = more.get();
  auto link = watchLink;
  return readdir(dir, after, 4096, m, as)
      .then([link, dir, id, m, as](Result<std::vector<DirEntryInfo>> page) -> kj::Promise<void> {
        Client* c = link->client;
        if (c == nullptr) return kj::READY_NOW;
        auto known = c->knownDirs.find(dir);
        if (known == c->knownDirs.end() || known->second.id != id) return kj::READY_NOW;
        if (!page.ok() || !c->watching() || known->second.names.size() > MAX_KNOWN_DIR) {
          // Not to be known (for now): kept as such, so that misses do not list it again.
          c->knownNames -= known->second.names.size();
          known->second.names.clear();
          known->second.tooBig = true;
          return kj::READY_NOW;
        }
        for (auto& e : page.value) c->mayExist(dir, e.name);
        known = c->knownDirs.find(dir);  // (mayExist may have forgotten every directory)
        if (known == c->knownDirs.end() || known->second.id != id) return kj::READY_NOW;
        if (*m && !page.value.empty()) {
          return c->learnPage(dir, id, page.value.back().name, as);
        }
        known->second.complete = true;
        return kj::READY_NOW;
      })
      .attach(kj::mv(more));
}

}  // namespace cairn
