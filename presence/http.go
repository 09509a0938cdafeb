package presence

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/imstream/imstream/store"
)

// OnlineHandler serves GET /online?appid=&uid= as imr answers it:
// {"online":bool,"servers":[…]} — online as docs/protocol.md §3 defines it, servers the
// live servers the user is present on.
func OnlineHandler(s store.PresenceStore) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		appid, err1 := strconv.ParseInt(r.URL.Query().Get("appid"), 10, 64)
		uid, err2 := strconv.ParseInt(r.URL.Query().Get("uid"), 10, 64)
		if err1 != nil || err2 != nil || appid <= 0 || uid <= 0 {
			http.Error(w, "appid and uid must be positive integers", http.StatusBadRequest)
			return
		}
		ps, err := s.Users(r.Context(), appid, []int64{uid}, time.Now())
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		servers := ps[0].Servers
		if servers == nil {
			servers = []string{}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(struct {
			Online  bool     `json:"online"`
			Servers []string `json:"servers"`
		}{ps[0].Online, servers})
	})
}
