/* A single-file HTTP server, like the thesis's test app: socket/bind/listen/accept, one process,
 * no fork and no threads (so it can also run as a Rumprun unikernel). Connections are served
 * with poll(), keep-alive included.
 * Listens on $PORT (default 9090); every answer's body names $GREETING, the hostname and the
 * program's arguments, so a caller can see what reached the app. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXC 1024
static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv) {
    const char *port_s = getenv("PORT");
    const char *greeting = getenv("GREETING");
    int port = port_s ? atoi(port_s) : 9090;
    char host[64] = "unknown";
    gethostname(host, sizeof host - 1);

    char args[512] = "";
    for (int i = 1; i < argc; i++) {
        strncat(args, argv[i], sizeof args - strlen(args) - 2);
        if (i + 1 < argc) strncat(args, " ", sizeof args - strlen(args) - 1);
    }
    char body[1024];
    int blen = snprintf(body, sizeof body, "Hello from bakeoff! greeting=%s host=%s args=%s\n",
                        greeting ? greeting : "", host, args);

    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 512) < 0) {
        perror("hello: bind/listen");
        return 1;
    }
    printf("hello: listening on port %d\n", port);
    fflush(stdout);

    static struct pollfd fds[MAXC + 1];
    int n = 1;
    fds[0].fd = lfd;
    fds[0].events = POLLIN;
    char req[4096];
    while (!stop) {
        if (poll(fds, n, 1000) <= 0) continue;
        if (fds[0].revents & POLLIN) {
            int c = accept(lfd, NULL, NULL);
            if (c >= 0 && n <= MAXC) {
                fds[n].fd = c;
                fds[n].events = POLLIN;
                fds[n].revents = 0;
                n++;
            } else if (c >= 0) {
                close(c);
            }
        }
        for (int i = 1; i < n; i++) {
            if (!fds[i].revents) continue;
            ssize_t r = recv(fds[i].fd, req, sizeof req - 1, 0);
            int done = r <= 0;
            if (!done) {
                req[r] = 0;
                int close_after = strstr(req, "onnection: close") != NULL;
                char head[160];
                int hl = snprintf(head, sizeof head,
                                  "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n",
                                  blen, close_after ? "Connection: close\r\n" : "");
                char out[1200];
                memcpy(out, head, hl);
                memcpy(out + hl, body, blen);
                done = send(fds[i].fd, out, hl + blen, 0) < 0 || close_after;
            }
            if (done) {
                close(fds[i].fd);
                fds[i] = fds[--n];
                i--;
            }
        }
    }
    printf("hello: shutting down\n");
    return 0;
}
